"""Background jobs: engine generators run in a napari `thread_worker`, one at a time per session.

The worker thread only iterates the engine generator it was given (inputs already copied out of
the layers on the main thread) and hands back whatever it yields and returns. It never reads or
writes widgets, layers or notifications: progress events, results and failures travel through Qt
signals and are applied on the main thread by the callbacks given to `JobRunner.start`.

Cancelling sets the job's `threading.Event`, which the engine checks between batches, so the
generator returns normally (training then keeps the best model so far). `worker.quit()` is never
used: it would drop the generator's return value.

Progress is coalesced in the worker: a position event (a batch done, tiles done) is handed on at
most every `POSITION_INTERVAL_S`, the latest one; every other event (an epoch's end, a warning) is
handed on as it comes. A fast net yields thousands of batches a second; queued one by one, they
kept the main thread seconds behind (Cancel clicked at "epoch 3/6" stopped in epoch 6).
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Generator

from psygnal import Signal

from .._generators import relay

log = logging.getLogger(__name__)

# A job: given its stop event, a generator (progress events, then the result) or a plain result.
Work = Callable[[threading.Event], "Generator[Any, None, Any] | Any"]

POSITION_INTERVAL_S = 1 / 30  # the job bar shows the worker's position at most ~33 ms late

# Errors a user can cause (bad labels, wrong channel count, unreadable file): message only.
# Anything else is a bug: show its type too, and print the traceback for the report.
_USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, IsADirectoryError)


@dataclass
class JobFailed:
    error: BaseException
    traceback: str


@dataclass
class FieldStep:
    """An engine progress event tagged with the field it belongs to (jobs over several fields)."""

    field_name: str
    index: int  # 0-based position of the field in the job
    count: int  # fields in the job
    progress: Any  # e.g. inference.InferenceProgress


@dataclass
class JobStage:
    """A job's next step that has no steps of its own to count (shown as a busy bar)."""

    text: str


def is_position(event: Any) -> bool:
    """Events that only say how far the job is: the next one makes this one stale."""
    from ..inference import InferenceProgress
    from ..training import BatchProgress

    inner = event.progress if isinstance(event, FieldStep) else event
    return isinstance(inner, (BatchProgress, InferenceProgress))


def coalesced(generator, interval_s: float = POSITION_INTERVAL_S):
    """Re-yield `generator`'s events, dropping position events that come within `interval_s` of
    the last one handed on; the last position before any other event is never dropped (it is
    where the job stood when that event happened). Returns the generator's return value."""
    last = -float("inf")
    held = None
    while True:
        try:
            event = next(generator)
        except StopIteration as done:
            return done.value
        if not is_position(event):
            if held is not None:
                yield held
                held = None
            yield event
            continue
        now = time.monotonic()
        if now - last >= interval_s:
            last, held = now, None
            yield event
        else:
            held = event


def tagged(generator, field_name: str, index: int, count: int):
    """Re-yield an engine generator's events as FieldSteps; return its return value."""
    return relay(generator, lambda event: FieldStep(field_name, index, count, event))


def user_message(error: BaseException) -> str:
    if isinstance(error, _USER_ERRORS):
        return str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"


class JobRunner:
    """Runs one job at a time; announces start, progress and end as psygnal signals (main thread)."""

    started = Signal(str)  # kind: "train", "classify", "explain", "import"
    progress = Signal(str, object)  # kind, whatever the engine yielded
    finished = Signal(str, bool)  # kind, succeeded (False on error or cancel)

    def __init__(self) -> None:
        self._kind: str | None = None
        self._stop: threading.Event | None = None
        self._worker = None

    @property
    def busy(self) -> bool:
        return self._kind is not None

    @property
    def kind(self) -> str | None:
        return self._kind

    @property
    def cancelled(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def start(
        self, kind: str, work: Work, on_result: Callable[[Any, bool], None], title: str | None = None
    ) -> None:
        """Run `work(stop_event)` in a worker thread; `on_result(result, cancelled)` runs on the
        main thread with the generator's return value. A failure becomes a napari error
        notification naming the job (`title`), and the runner is free again either way."""
        from napari.qt.threading import create_worker

        if self.busy:
            raise RuntimeError(f"another job ({self._kind}) is still running")
        stop = threading.Event()
        title = title or kind.capitalize()

        def guarded():
            # Runs in the worker thread: no Qt, no napari, only the engine.
            try:
                result = work(stop)
                if inspect.isgenerator(result):
                    result = yield from coalesced(result)
            except Exception as exc:  # every failure is reported on the main thread
                return JobFailed(exc, traceback.format_exc())
            return result

        worker = create_worker(guarded, _start_thread=False, _ignore_errors=True)
        outcome: dict[str, bool] = {"ok": False}

        def on_yielded(event):
            self.progress.emit(kind, event)

        def on_returned(result):
            if isinstance(result, JobFailed):
                _report_failure(title, result)
                return
            try:
                on_result(result, stop.is_set())
            except Exception as exc:
                _report_failure(title, JobFailed(exc, traceback.format_exc()))
                return
            outcome["ok"] = not stop.is_set()

        def on_errored(exc):  # only if something escaped `guarded` (it should not)
            _report_failure(title, JobFailed(exc, ""))

        def on_finished():
            self._kind = self._stop = self._worker = None
            self.finished.emit(kind, outcome["ok"])

        worker.yielded.connect(on_yielded)
        worker.returned.connect(on_returned)
        worker.errored.connect(on_errored)
        worker.finished.connect(on_finished)
        self._kind, self._stop, self._worker = kind, stop, worker
        self.started.emit(kind)
        worker.start()

    def cancel(self) -> None:
        if self._stop is not None:
            self._stop.set()


def _report_failure(title: str, failed: JobFailed) -> None:
    from napari.utils.notifications import show_error

    if failed.traceback and not isinstance(failed.error, _USER_ERRORS):
        log.error("%s failed:\n%s", title, failed.traceback)  # a bug: keep the details
    show_error(f"{title} failed: {user_message(failed.error)}")
