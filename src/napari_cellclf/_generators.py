"""The engine's long jobs are generators of progress events whose return value is the result
(napari's thread_worker delivers it through `returned`). Scripts and the CLI drive them here."""

from __future__ import annotations

from typing import Any, Callable, Generator, TypeVar

Result = TypeVar("Result")


def drive(generator: Generator[Any, None, Result], on_event: Callable[[Any], None] | None = None) -> Result:
    """Run `generator` to its end, handing each event to `on_event`; return its return value."""
    while True:
        try:
            event = next(generator)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)


def relay(
    generator: Generator[Any, None, Result], convert: Callable[[Any], Any]
) -> Generator[Any, None, Result]:
    """Re-yield each event of `generator` as `convert(event)`; return its return value (an engine
    step that reports an inner step's progress in its own terms)."""
    while True:
        try:
            event = next(generator)
        except StopIteration as done:
            return done.value
        yield convert(event)
