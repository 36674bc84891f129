"""`cellclf crosstest DATA1 DATA2 [DATA3 ...] --out DIR`: train on each, test on every other."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from ._common import DATA_HELP, CLIError, add_channels, err, note, out, parse_channels, reading_bar

NAME = "crosstest"


def add_parser(commands) -> argparse.ArgumentParser:
    from ..options import FOLDER_MODE, MIN_FRACTION, STRIDE, TILE_SIZE, add_train_arguments

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
    TILE_SIZE.add_to(parser)
    STRIDE.add_to(parser)
    FOLDER_MODE.add_to(parser)
    parser.add_argument("--classes", metavar="A,B,...", help="label images: names of label values 1, 2, ...")
    MIN_FRACTION.add_to(parser)
    add_channels(parser, for_model=False)
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
    from .. import options
    from ..crosstest import crosstest, write_crosstest
    from ..datasets import TileSpec, detect_layout, load_folder
    from ..training import check_config
    from ._common import parse_class_list
    from .train import _TrainingPrinter

    if len(args.data) < 2:
        raise CLIError("crosstest needs at least two DATA folders")
    config = options.train_config_from(vars(args))
    runs = config.runs
    try:
        check_config(config)
    except ValueError as error:
        message = str(error)
        for field_name, flag in options.option_of_config_field().items():
            message = message.replace(f"TrainConfig.{field_name}", flag)
        raise CLIError(message) from None
    class_names = parse_class_list(args.classes)
    default_channels = parse_channels(args.channels)
    datasets = {}
    for text in args.data:
        root, channels, name = _split_spec(text, default_channels)
        if name in datasets:
            name = str(root) + (text[len(str(root)) :] if text.startswith(str(root)) else "")
        if name in datasets:
            raise CLIError(f"{text}: given twice")
        layout = detect_layout(root)
        update, close = reading_bar(f"reading {name}")
        try:
            dataset = load_folder(
                root,
                layout,
                TileSpec(args.tile_size, args.stride, args.min_fraction),
                mode=args.mode,
                channels=channels,
                class_names=class_names,
                note=note,
                progress=update,
            )
        finally:
            close()
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
