"""Many files, one output each: serial, on a local dask.distributed cluster, on an existing
scheduler, or as one shard of an array job. No Qt.

- `predict_files(model, images, out_dir, workers=N | scheduler=ADDRESS | shard=(I, N))`: one CSV
  per input (`output_path`: the input's stem + ".csv"), each written atomically (temporary file,
  fsync, rename), so an output that exists is complete: a rerun skips finished inputs
  (resumable) and a killed worker loses only the file it was on (dask reschedules that task).
- The model file is read once by the client and broadcast to every worker once
  (`Client.scatter(..., broadcast=True)`); each worker process builds its Classifier once per
  model (cached by the file's SHA-256), not once per task.
- `--shard I/N` (0 <= I < N): the inputs sorted by path, every N-th from I: plain array jobs
  (SLURM_ARRAY_TASK_ID) need no scheduler at all; combine with `merge_csvs` afterwards.
- Results do not depend on how the work is spread: the same code runs each file, in fp32 by
  default (bit-identical probabilities whichever worker ran it; pass precision="auto" for bf16).

dask.distributed is an optional dependency (`pip install napari-cellclf[distributed]`); the
serial and shard paths work without it.
"""

from __future__ import annotations

import csv
import hashlib
import io as io_module
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

if TYPE_CHECKING:
    from distributed import LocalCluster

_CLASSIFIERS: dict = {}  # per worker process: (sha256, device, precision) -> Classifier


@dataclass
class FileResult:
    source: str
    output: str
    status: str  # "done" | "skipped" | "failed"
    n_tiles: int = 0
    seconds: float = 0.0
    error: str = ""
    worker: str = ""


@dataclass
class RunSummary:
    results: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def n_tiles(self) -> int:
        return sum(r.n_tiles for r in self.results)

    def line(self) -> str:
        rate = self.n_tiles / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.count('done')} done, {self.count('skipped')} skipped (already written), "
            f"{self.count('failed')} failed; {self.n_tiles} tiles in {self.seconds:.1f} s "
            f"({rate:.0f} tiles/s)"
        )


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """ "I/N" -> (I, N) with 0 <= I < N; None -> None; ValueError otherwise."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must be I/N (e.g. 0/4), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {text!r}: need 0 <= I < N")
    return index, count


def select_shard(images: Sequence, shard: tuple[int, int] | None) -> list[Path]:
    paths = sorted(Path(p) for p in images)
    if shard is None:
        return paths
    index, count = shard
    return paths[index::count]


def output_path(image: str | Path, out_dir: str | Path, images: Sequence | None = None) -> Path:
    """out_dir / <stem>.csv; when another input shares the stem (same name, other folder), a
    short hash of the input's folder is appended so that outputs never collide."""
    image = Path(image)
    name = image.stem
    if images is not None and sum(Path(p).stem == name for p in images) > 1:
        digest = hashlib.sha256(str(image.resolve().parent).encode()).hexdigest()[:8]
        name = f"{name}-{digest}"
    return Path(out_dir) / f"{name}.csv"


# ------------------------------------------------------------------------------ one file


def _classifier_from_bytes(model_bytes: bytes, device: str, precision: str | None, threads: int | None):
    key = (hashlib.sha256(model_bytes).hexdigest(), device, precision)
    classifier = _CLASSIFIERS.get(key)
    if classifier is None:
        import torch

        from .inference import Classifier
        from .modelfile import load_model

        if threads:
            torch.set_num_threads(int(threads))
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.safetensors"
            path.write_bytes(model_bytes)
            model, meta = load_model(path, device="cpu")
        classifier = Classifier(model, meta, device=device, precision=precision)
        _CLASSIFIERS.clear()  # one model per worker at a time
        _CLASSIFIERS[key] = classifier
    return classifier


def predict_one(
    classifier,
    image: str | Path,
    out: str | Path,
    *,
    stride: int | None = None,
    foreground_only: bool = False,
) -> int:
    """Classify one file and write its CSV atomically; returns the number of tiles."""
    from . import io, streaming
    from .channels import model_channel_indices
    from .objects import image_channel_names
    from .tables import write_predictions_csv

    image = Path(image)
    data = io.read_image(image)
    meta = classifier.meta
    lazy = None if foreground_only else streaming.open_lazy(data)
    if lazy is not None:  # too large to convert whole: band by band, rows appended as they come
        with lazy:
            channels = model_channel_indices(
                image_channel_names(meta), meta.channel_indices, lazy.channel_names
            )
        return streaming.predict_file_streaming(classifier, image, out, stride=stride, channels=channels)
    cyx, names = io.to_cyx(data)
    cyx = cyx[model_channel_indices(image_channel_names(meta), meta.channel_indices, names)]
    prediction = classifier.predict_field_sync(cyx, stride=stride, foreground_only=foreground_only)
    write_predictions_csv(out, prediction.table(), source=image.name)
    return len(prediction.indices)


def _task(model_bytes: bytes, image: str, out: str, options: dict) -> FileResult:
    """What a worker runs for one file (module-level: workers import it by name)."""
    start = time.perf_counter()
    worker = f"{os.uname().nodename}:{os.getpid()}" if hasattr(os, "uname") else str(os.getpid())
    try:
        classifier = _classifier_from_bytes(
            model_bytes,
            options.get("device", "cpu"),
            options.get("precision", "fp32"),
            options.get("threads"),
        )
        n = predict_one(
            classifier,
            image,
            out,
            stride=options.get("stride"),
            foreground_only=options.get("foreground_only", False),
        )
        return FileResult(str(image), str(out), "done", n, time.perf_counter() - start, worker=worker)
    except Exception as error:  # one bad file must not stop the others
        return FileResult(
            str(image),
            str(out),
            "failed",
            0,
            time.perf_counter() - start,
            f"{type(error).__name__}: {error}",
            worker,
        )


# ------------------------------------------------------------------------------ many files


def _refuse_cell_models(model: Path) -> None:
    """ValueError for a model that classifies cells only (objects.tile_mode_problem: it reads the
    cell's mask as a channel): every file here is classified on the tile grid, so it is refused
    once, before any work, rather than failing in every task."""
    from .modelfile import read_meta
    from .objects import tile_mode_problem

    try:
        meta = read_meta(model)
    except (ValueError, OSError):
        return  # an unreadable model fails in each task, with that task's message, as before
    problem = tile_mode_problem(meta)
    if problem:
        raise ValueError(f"{model}: {problem}")


def predict_files(
    model: str | Path,
    images: Sequence,
    out_dir: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    shard: tuple[int, int] | str | None = None,
    stride: int | None = None,
    foreground_only: bool = False,
    device: str = "cpu",
    precision: str | None = "fp32",
    threads_per_worker: int = 1,
    overwrite: bool = False,
    on_result: Callable[[FileResult], None] | None = None,
) -> RunSummary:
    """Classify every image into out_dir/<stem>.csv; see the module docstring.

    workers=None/0 and no scheduler: in this process. workers=N: a LocalCluster of N worker
    processes on 127.0.0.1 with threads_per_worker torch threads each, closed afterwards.
    scheduler="tcp://host:port": that cluster (left running). Inputs whose output exists are
    skipped unless overwrite."""
    started = time.perf_counter()
    if isinstance(shard, str):
        shard = parse_shard(shard)
    model = Path(model)
    _refuse_cell_models(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    everything = [Path(p) for p in images]
    paths = select_shard(everything, shard)
    summary = RunSummary()

    todo: list[tuple[Path, Path]] = []
    for path in paths:
        out = output_path(path, out_dir, everything)
        if out.exists() and not overwrite:
            result = FileResult(str(path), str(out), "skipped")
            summary.results.append(result)
            if on_result:
                on_result(result)
        else:
            todo.append((path, out))
    options = dict(
        stride=stride,
        foreground_only=foreground_only,
        device=device,
        precision=precision,
        threads=threads_per_worker,
    )
    model_bytes = model.read_bytes()

    def record(result: FileResult) -> None:
        summary.results.append(result)
        if on_result:
            on_result(result)

    if not todo:
        pass
    elif not workers and scheduler is None:
        for path, out in todo:
            record(_task(model_bytes, str(path), str(out), options))
    else:
        with _client(workers, scheduler, threads_per_worker) as client:
            # Once per worker, not once per task: the tasks take a reference to this future.
            model_future = client.scatter(model_bytes, broadcast=True, hash=True)
            from distributed import as_completed

            futures = [
                client.submit(
                    _task,
                    model_future,
                    str(path),
                    str(out),
                    options,
                    key=f"cellclf-predict-{out.name}-{time.time_ns()}",
                    pure=False,
                )
                for path, out in todo
            ]
            for future in as_completed(futures):
                record(future.result())
    summary.seconds = time.perf_counter() - started
    return summary


class _client:
    """Context manager: a Client on a new LocalCluster (closed after) or on an existing one."""

    def __init__(self, workers: int | None, scheduler: str | None, threads: int):
        try:
            import distributed  # noqa: F401
        except ImportError as error:
            raise RuntimeError(
                "dask.distributed is needed for workers/scheduler: pip install 'napari-cellclf[distributed]'"
            ) from error
        self.workers, self.scheduler, self.threads = workers, scheduler, threads
        self.cluster: LocalCluster | None = None

    def __enter__(self):
        from distributed import Client, LocalCluster

        if self.scheduler is not None:
            self.client = Client(self.scheduler, timeout="30s")
        else:
            if self.workers is None:  # predict_files runs in-process without workers or a scheduler
                raise ValueError("a local cluster needs a number of workers")
            # Each worker a process with its own torch threads; loopback only, no dashboard.
            self.cluster = LocalCluster(
                n_workers=int(self.workers),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=40,
                env={"OMP_NUM_THREADS": str(self.threads)},
            )
            self.client = Client(self.cluster)
        return self.client

    def __exit__(self, *exc):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()
        return False


# ------------------------------------------------------------------------------ merge


def merge_csvs(inputs: Sequence, out: str | Path) -> int:
    """Join per-file prediction CSVs (same columns, in the same order) into one, atomically;
    returns the number of rows. ValueError when the headers differ."""
    from ._files import atomic_write

    header: list[str] | None = None
    rows: list[list[str]] = []
    for path in sorted(Path(p) for p in inputs):
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            this = next(reader, None)
            if this is None:
                continue
            if header is None:
                header = this
            elif this != header:
                raise ValueError(f"{path}: columns {this} differ from {header}")
            rows.extend(reader)
    if header is None:
        raise ValueError("no CSV with a header to merge")

    def write(binary) -> None:
        text = io_module.TextIOWrapper(binary, newline="", encoding="utf-8")
        writer = csv.writer(text)
        writer.writerow(header)
        writer.writerows(rows)
        text.flush()
        text.detach()

    atomic_write(Path(out), write)
    return len(rows)
