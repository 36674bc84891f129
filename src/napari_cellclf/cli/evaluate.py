"""`cellclf evaluate MODEL DATA`: accuracy beside balanced accuracy and chance, the verdict,
per-class precision/recall and the confusion matrix (all from evaluation.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import (
    DATA_HELP,
    PROG,
    CLIError,
    add_channels,
    add_device,
    add_plane,
    err,
    load_classifier,
    model_channels,
    note,
    out,
    parse_channels,
    parse_plane,
    progress,
    read_field,
    reading_bar,
)

NAME = "evaluate"


def add_parser(commands) -> argparse.ArgumentParser:

    parser = commands.add_parser(
        NAME,
        help="accuracy, per-class precision/recall and confusion matrix on labelled data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DATA_HELP + "\n\nDATA may hold only some of the model's classes; class "
        "folders are matched to the model's classes by name.",
    )
    add_labelled_data_arguments(parser)
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)"
    )
    parser.set_defaults(handler=run)
    return parser


def add_labelled_data_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL DATA and how DATA is read: the one set that `evaluate` and `report` share, so that
    `load_labelled` finds every attribute it reads on both."""
    from ..options import FOLDER_MODE, MIN_FRACTION

    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument("data", metavar="DATA", help="folder of labelled images (see above)")
    parser.add_argument(
        FOLDER_MODE.flag,
        dest=FOLDER_MODE.name,
        choices=FOLDER_MODE.choices,
        help="class folders: default the mode the model was trained with",
    )
    parser.add_argument("--stride", type=int, metavar="N", help="step between tiles (default as in training)")
    MIN_FRACTION.add_to(parser)
    parser.add_argument(
        "--all-samples",
        action="store_true",
        help="when DATA is the model's training folder, use every sample (default: only its "
        "validation split, as training tiles would flatter the model)",
    )
    add_channels(parser, for_model=True)
    add_plane(parser)
    add_device(parser)


def load_labelled(args):
    """(classifier, meta, dataset, layout) for MODEL DATA read the way the model was trained:
    shared by `evaluate` and `report`."""
    from ..datasets import TileSpec, detect_layout, load_folder, probe_image

    model_path, root = Path(args.model), Path(args.data)
    classifier, meta = load_classifier(model_path, args.device)
    cli_extra = (meta.extra or {}).get("cli", {})
    layout = detect_layout(root)
    err(f"{root}: " + ("class folders" if layout == "folders" else "label images"))

    explicit = parse_channels(args.channels)
    probe = probe_image(root, layout)
    plane = parse_plane(args.plane)
    _, _, probe_names = read_field(probe, plane)
    indices = model_channels(meta, probe_names, explicit, probe)

    # Class folders are read the way the model's training data was: resized cell crops, or
    # tiles when the model learnt from tiles of fields (label images, or the napari widget).
    trained_layout = cli_extra.get("layout")
    # A model without a record (trained in the widget, or by a script) learnt from tiles of
    # fields: resizing whole images to one tile would feed it something it never saw.
    mode = args.mode or (cli_extra.get("mode", "resize") if trained_layout == "folders" else "tile")
    if layout == "folders":
        err(f"{PROG}: reading class folders with --mode {mode}")
    stride = args.stride if args.stride is not None else cli_extra.get("stride")
    update, close = reading_bar()
    try:
        dataset = load_folder(
            root,
            layout,
            TileSpec(meta.tile_size, stride, args.min_fraction),
            mode=mode,
            channels=indices,
            class_names=meta.class_names,
            known_classes=True,
            note=note,
            progress=update,
            plane=plane,
        )
    finally:
        close()
    if len(dataset) == 0:
        raise CLIError(f"{root}: no labelled samples to evaluate")
    return classifier, meta, dataset, layout


def held_out(meta, dataset, root: Path, use_all: bool):
    """The model's own validation split when DATA is the folder it was trained on (scoring
    training tiles would flatter it), else all of DATA. Returns (dataset, note or None)."""
    import numpy as np

    from ..data import split_train_val

    record = (meta.extra or {}).get("cli", {})
    config = (meta.extra or {}).get("train_config") or {}
    trained_on = record.get("data")
    if use_all or not trained_on or Path(trained_on).resolve() != root.resolve():
        return dataset, None
    fraction, seed = config.get("val_fraction"), config.get("seed", 0)
    if not fraction:
        return dataset, (
            f"{root} is the model's training data and it kept no validation split: "
            "these numbers are on training tiles and flatter the model"
        )
    _, val_idx = split_train_val(dataset, fraction, seed=seed)
    val_idx = np.asarray(val_idx, dtype=np.int64)
    if len(val_idx) == 0:
        return dataset, f"{root} is the model's training data; no validation tiles could be re-made"
    return dataset.subset(val_idx), (
        f"{root} is the data the model was trained on: scoring its validation split only "
        f"({len(val_idx)} of {len(dataset)} samples; --all-samples for every one)"
    )


def run(args) -> int:
    from ..evaluation import evaluate, format_metrics

    classifier, meta, dataset, layout = load_labelled(args)
    dataset, split_note = held_out(meta, dataset, Path(args.data), args.all_samples)
    if split_note:
        err(f"{PROG}: {split_note}")
    with progress(len(dataset), "evaluating", unit="tile") as bar:
        result = evaluate(classifier, dataset, on_progress=lambda done, total: bar.update(done - bar.n))
    report = result.metrics.to_dict()
    report.update(
        model=str(args.model),
        data=str(args.data),
        layout=layout,
        split="validation" if split_note and "validation split only" in split_note else "all",
    )

    if args.json:
        out(json.dumps(report))
    else:
        for line in format_metrics(report):
            out(line)
    if result.metrics.verdict:
        err(f"{PROG}: warning: {result.metrics.verdict}")
    return 0
