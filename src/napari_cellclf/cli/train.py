"""`cellclf train DATA --out MODEL`: train on a folder of labelled images."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from ._common import (
    DATA_HELP,
    EXIT_INTERRUPTED,
    PROG,
    err,
    format_accuracy,
    out,
    parse_channels,
    progress,
    train_config,
)
from ._labelled import add_training_data_arguments, check_training_data_arguments, read_training_data

NAME = "train"


def add_parser(commands) -> argparse.ArgumentParser:
    from ..options import add_train_arguments

    parser = commands.add_parser(
        NAME,
        help="train a model on a folder of labelled images",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DATA_HELP,
        epilog="Ctrl-C stops training after the current batch and saves the best model so far "
        "(exit status 130).",
    )
    parser.add_argument("data", metavar="DATA", help="folder of training images (see above)")
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="MODEL",
        help="model file to write (.safetensors added when missing)",
    )
    add_training_data_arguments(parser)
    add_train_arguments(parser)  # one option per training.TrainConfig field
    parser.add_argument(
        "--report",
        metavar="DIR",
        help="also write DIR/runs.csv (one row per run: seed, best epoch, validation accuracy and "
        "balanced accuracy), DIR/runs.png (box plot, every run a point) and DIR/curves.png",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    from .. import data, objects
    from ..model import choose_device
    from ..modelfile import model_file_path, save_model
    from ..pixelsize import training_pixel_size_of_files
    from ..provenance import add_provenance
    from ..runs_report import write_runs_report
    from ._common import check_output

    # Settings that cannot work fail before any data is read.
    check_training_data_arguments(args)
    config = train_config(args)
    choose_device(config.device)  # a GPU asked for but absent
    root = Path(args.data)
    # The output is checked now, not after an hour of training (the real name, suffix added).
    model_path = check_output(model_file_path(args.out), [root])
    dataset, layout, indices = read_training_data(args, root, parse_channels(args.channels))
    counts = dataset.class_counts()
    out(
        f"{len(dataset)} samples of {args.tile_size}x{args.tile_size} px, "
        f"{len(dataset.channel_names)} channel(s) ({', '.join(dataset.channel_names)}), "
        f"{len(dataset.sources) or '?'} source image(s): "
        + ", ".join(f"{name} {n}" for name, n in counts.items())
    )
    data.check_trainable(dataset)

    stop = threading.Event()
    result, finished, shown = run_training(dataset, config, stop)

    if result.cancelled and not any(run.get("epochs_completed", 0) > 0 for run in result.history.runs):
        err(f"{PROG}: interrupted before the first epoch ended; no model saved")
        return EXIT_INTERRUPTED

    print_training_summary(result, finished, shown)
    meta = result.meta(channel_indices=indices)
    meta.extra = {
        **(meta.extra or {}),
        "cli": {"layout": layout, "mode": args.mode, "stride": args.stride, "data": str(root)},
    }
    if layout == "objects":
        meta.extra[objects.EXTRA_KEY] = objects.settings_extra(args.blank_background, args.mask_channel)
    meta.pixel_size = training_pixel_size_of_files(dataset.sources)
    if meta.pixel_size:
        out(
            f"training pixel size {meta.pixel_size['y']:.3g} x {meta.pixel_size['x']:.3g} "
            f"{meta.pixel_size['unit'] or ''} stored in the model (predict warns on other sizes)"
        )
    meta.extra["evaluation"] = validation_report(result, dataset)
    add_provenance(meta, dataset, config)  # data summary and split in the model file
    saved = save_model(model_path, result.model, meta)
    if args.report:
        paths = write_runs_report(result.history, args.report)
        out(f"run report: {paths['csv']}, {paths['box']}, {paths['curves']}")
    if result.cancelled:
        out(f"training stopped early by Ctrl-C; best model so far saved to {saved}")
        return EXIT_INTERRUPTED
    out(f"model saved to {saved}")
    return 0


def validation_report(result, dataset) -> dict | None:
    """The kept model on its validation split (evaluation.py: accuracy beside balanced accuracy
    and chance, the verdict), printed and returned for the model file."""
    from ..evaluation import format_metrics, validation_metrics

    evaluation = validation_metrics(result, dataset)
    if evaluation is None:
        return None
    out("validation split of the kept model:")
    for line in format_metrics(evaluation.metrics.to_dict()):
        out(f"  {line}")
    if evaluation.metrics.verdict:
        err(f"{PROG}: warning: {evaluation.metrics.verdict}")
    return evaluation.metrics.to_dict()


class _TrainingPrinter:
    """Shows training events: a bar per epoch, one line per epoch, warnings as they happen."""

    def __init__(self):
        from .. import training

        self.training = training
        self.finished: list = []
        self.shown: set[str] = set()  # warnings already printed as they happened
        self.bar = None

    def __call__(self, event) -> None:
        training = self.training
        if isinstance(event, training.BatchProgress):
            if self.bar is None or event.batch == 0:
                self.close()
                run = f"run {event.run + 1}/{event.n_runs} " if event.n_runs > 1 else ""
                self.bar = progress(
                    event.n_batches, f"{run}epoch {event.epoch + 1}/{event.n_epochs}", unit="batch"
                )
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{event.loss:.3f}", refresh=False)
        elif isinstance(event, training.EpochEnd):
            self.close()
            run = f"run {event.run + 1}/{event.n_runs} " if event.n_runs > 1 else ""
            val = (
                "val loss -     acc -"
                if event.val_loss is None
                else f"val loss {event.val_loss:.4f} acc {format_accuracy(event.val_accuracy)} "
                f"balanced {format_accuracy(event.val_balanced_accuracy)}"
            )
            out(
                f"{run}epoch {event.epoch + 1:>3}/{event.n_epochs}  "
                f"train loss {event.train_loss:.4f} acc {event.train_accuracy:.3f}  {val}"
                + ("  *kept" if event.is_best else "")
            )
        elif isinstance(event, training.MemorisationWarning):
            err(f"{PROG}: warning: {event.message}")
            self.shown.add(event.message)
        elif isinstance(event, training.RunFinished):
            self.finished.append(event)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_training(dataset, config, stop: threading.Event):
    """Drive training.train (through _generators.drive), printing epoch lines and warnings; the
    first Ctrl-C sets `stop` (training ends within a batch and hands back the best model so far),
    a second one aborts. -> (result, RunFinished events, warnings already shown)."""
    from .. import training
    from .._generators import drive

    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        err(
            f"\n{PROG}: stopping after this batch and saving the best model so far "
            "(Ctrl-C again to abort without saving)"
        )

    printer = _TrainingPrinter()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        result = drive(training.train(dataset, config, stop=stop), printer)
    finally:
        printer.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    return result, printer.finished, printer.shown


def _balanced_beside(result, event) -> str:
    """' (balanced accuracy B, chance C)' of a run's best epoch, from its History record."""
    runs = result.history.runs
    record = runs[event.run] if 0 <= event.run < len(runs) else {}
    curve = record.get("val_balanced_accuracy") or []
    if not 0 <= event.best_epoch < len(curve) or curve[event.best_epoch] is None:
        return ""
    chance = record.get("chance")
    shown = f", chance {chance:.3f}" if chance is not None else ""
    return f" (balanced accuracy {curve[event.best_epoch]:.3f}{shown})"


def print_training_summary(result, finished, shown: set[str]) -> None:
    summary = result.history.summary()
    accuracies = summary.get("best_val_accuracy") or {}
    if len(finished) > 1 and accuracies.get("mean") is not None:
        out(
            f"best validation accuracy over {len(finished)} runs: "
            f"{accuracies['mean']:.3f} ± {accuracies['std']:.3f} "
            f"(min {accuracies['min']:.3f}, max {accuracies['max']:.3f})"
        )
        for event in finished:
            out(
                f"  run {event.run + 1} (seed {event.seed}): {format_accuracy(event.best_val_accuracy)}"
                + _balanced_beside(result, event)
                + f" at epoch {event.best_epoch + 1}"
                + (" (stopped early)" if event.stopped_early else "")
            )
        best = summary.get("best_run")
        if best is not None:
            out(f"keeping run {best + 1}")
    elif finished:
        event = finished[-1]
        if event.best_epoch < 0:
            pass  # no epoch counted as best: History's warning says why
        elif event.best_val_accuracy is None:
            out(f"no validation set (--val-fraction 0); keeping epoch {event.best_epoch + 1}")
        else:
            out(
                f"best validation accuracy {event.best_val_accuracy:.3f}"
                + _balanced_beside(result, event)
                + f" at epoch {event.best_epoch + 1}"
                + (" (stopped early)" if event.stopped_early else "")
            )
    for warning in result.history.warnings:
        if warning not in shown:
            err(f"{PROG}: warning: {warning}")
