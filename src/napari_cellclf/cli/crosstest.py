"""`cellclf crosstest DATA1 DATA2 [DATA3 ...] --out DIR`: train on each, test on every other."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from ._common import DATA_HELP, CLIError, err, out, parse_channels, train_config
from ._labelled import add_training_data_arguments, check_training_data_arguments, read_training_data

NAME = "crosstest"


def add_parser(commands) -> argparse.ArgumentParser:
    from ..options import add_train_arguments

    parser = commands.add_parser(
        NAME,
        help="train on each dataset and test on every other one (cross-dataset generalisation)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train --runs models on each DATA and test each model on its own held-out "
        "validation split and on all of every other DATA. Classes are matched by folder name / "
        "--classes; a class one dataset lacks is reported. Writes DIR/crosstest.csv (train, test, "
        "run, accuracy, balanced_accuracy, ...) and DIR/crosstest.png (median balanced accuracy, "
        "colour from chance to 1).\n\nA DATA may end in ':CH[,CH...]' to read only those channels "
        "of it (e.g. cells:brightfield cells:darkfield); --channels applies to the others.\n\n" + DATA_HELP,
    )
    parser.add_argument("data", metavar="DATA", nargs="+", help="two or more labelled folders")
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="folder for the results")
    add_training_data_arguments(parser)  # DATA is read as `cellclf train` reads it
    add_train_arguments(parser)  # --runs N: models per dataset
    parser.set_defaults(handler=run)
    return parser


def _split_spec(text: str, default_channels):
    """'path' or 'path:CH,CH' -> (path, channels, display name)."""
    path, sep, channels = text.rpartition(":")
    if sep and path and not Path(text).exists() and Path(path).exists():
        return Path(path), parse_channels([channels]), f"{Path(path).name}:{channels}"
    return Path(text), default_channels, Path(text).name


def run(args) -> int:
    from ..crosstest import crosstest, write_crosstest
    from .train import _TrainingPrinter

    if len(args.data) < 2:
        raise CLIError("crosstest needs at least two DATA folders")
    check_training_data_arguments(args)
    config = train_config(args)
    runs = config.runs
    default_channels = parse_channels(args.channels)
    datasets = {}
    for text in args.data:
        root, channels, name = _split_spec(text, default_channels)
        if name in datasets:
            name = str(root) + (text[len(str(root)) :] if text.startswith(str(root)) else "")
        if name in datasets:
            raise CLIError(f"{text}: given twice")
        dataset, _, _ = read_training_data(args, root, channels, name=name)
        out(
            f"{name}: {len(dataset)} samples, channel(s) {', '.join(dataset.channel_names)}: "
            + ", ".join(f"{k} {n}" for k, n in dataset.class_counts().items())
        )
        datasets[name] = dataset

    from ..crosstest import CrosstestStep

    printer = _TrainingPrinter()

    def show(event) -> None:
        if isinstance(event, CrosstestStep):
            printer.close()
            out(
                f"training {event.index}/{event.n_trainings}: on {event.train}, run {event.run}/{event.n_runs}"
            )
        else:
            printer(event)

    stop = threading.Event()
    try:
        results = crosstest(datasets, config, runs=runs, on_progress=show, stop=stop)
    finally:
        printer.close()
    for line in results.notes:
        err(f"cellclf: note: {line}")
    paths = write_crosstest(results, args.out)
    names = results.names
    matrix = results.matrix()
    width = max(len(n) for n in names)
    out(
        f"median balanced accuracy over {runs} run(s) (chance {results.chance():.3f}); "
        "rows trained on, columns tested on (diagonal: own held-out split)"
    )
    out(" " * (width + 2) + "  ".join(f"{n:>{max(6, len(n))}}" for n in names))
    for name, row in zip(names, matrix):
        out(f"{name:<{width}}  " + "  ".join(f"{v:>{max(6, len(n))}.3f}" for v, n in zip(row, names)))
    out(f"wrote {paths['csv']} and {paths['png']}")
    return 0
