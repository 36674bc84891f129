"""`cellclf evaluate MODEL DATA`: accuracy, per-class precision/recall and confusion matrix."""

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
    err,
    format_accuracy,
    load_classifier,
    model_channels,
    note,
    out,
    parse_channels,
    progress,
    read_field,
    reading_bar,
)

NAME = "evaluate"


def add_parser(commands) -> argparse.ArgumentParser:
    from ..options import FOLDER_MODE, MIN_FRACTION

    parser = commands.add_parser(
        NAME,
        help="accuracy, per-class precision/recall and confusion matrix on labelled data",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DATA_HELP + "\n\nDATA may hold only some of the model's classes; class "
        "folders are matched to the model's classes by name.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument("data", metavar="DATA", help="folder of labelled images (see above)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on stdout (progress stays on stderr)"
    )
    parser.add_argument(
        FOLDER_MODE.flag,
        dest=FOLDER_MODE.name,
        choices=FOLDER_MODE.choices,
        help="class folders: default the mode the model was trained with",
    )
    parser.add_argument("--stride", type=int, metavar="N", help="step between tiles (default as in training)")
    MIN_FRACTION.add_to(parser)
    add_channels(parser, for_model=True)
    add_device(parser)
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    import numpy as np

    from ..datasets import TileSpec, detect_layout, load_folder, probe_image

    model_path, root = Path(args.model), Path(args.data)
    classifier, meta = load_classifier(model_path, args.device)
    cli_extra = (meta.extra or {}).get("cli", {})
    layout = detect_layout(root)
    err(f"{root}: " + ("class folders" if layout == "folders" else "label images"))

    explicit = parse_channels(args.channels)
    probe = probe_image(root, layout)
    _, _, probe_names = read_field(probe)
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
        )
    finally:
        close()
    if len(dataset) == 0:
        raise CLIError(f"{root}: no labelled samples to evaluate")

    probabilities = []
    chunk = 1024
    with progress(len(dataset), "evaluating", unit="tile") as bar:
        for start in range(0, len(dataset), chunk):
            probabilities.append(classifier.predict_tiles(dataset.tiles[start : start + chunk]))
            bar.update(min(chunk, len(dataset) - start))
    predicted = np.concatenate(probabilities).argmax(axis=1)
    report = metrics(dataset.labels, predicted, list(meta.class_names))
    report.update(model=str(model_path), data=str(root), layout=layout)

    if args.json:
        out(json.dumps(report))
    else:
        print_report(report)
    return 0


def metrics(truth, predicted, class_names: list[str]) -> dict:
    """Accuracy, confusion (rows = true, columns = predicted) and per-class precision/recall
    (None where undefined: no sample of / no prediction of that class).
    The CLI's one metrics function until evaluation.classification_metrics lands."""
    import numpy as np

    k = len(class_names)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (np.asarray(truth), np.asarray(predicted)), 1)
    n = int(confusion.sum())
    per_class = {}
    for i, name in enumerate(class_names):
        true_i, predicted_i, hit = confusion[i].sum(), confusion[:, i].sum(), confusion[i, i]
        per_class[name] = {
            "support": int(true_i),
            "precision": float(hit / predicted_i) if predicted_i else None,
            "recall": float(hit / true_i) if true_i else None,
        }
    return {
        "accuracy": float(np.trace(confusion) / n) if n else None,
        "n": n,
        "classes": class_names,
        "confusion": confusion.tolist(),
        "per_class": per_class,
    }


def print_report(report: dict) -> None:
    names = report["classes"]
    width = max(9, *(len(n) for n in names))
    out(f"accuracy {report['accuracy']:.3f} on {report['n']} samples")
    out(f"{'class':<{width}}  precision  recall  support")
    for name in names:
        row = report["per_class"][name]
        out(
            f"{name:<{width}}  {format_accuracy(row['precision']):>9}  "
            f"{format_accuracy(row['recall']):>6}  {row['support']:>7}"
        )
    out("confusion matrix (rows: true class, columns: predicted):")
    cell = max(*(len(n) for n in names), *(len(str(v)) for row in report["confusion"] for v in row))
    out(" " * width + "  " + "  ".join(f"{n:>{cell}}" for n in names))
    for name, row in zip(names, report["confusion"]):
        out(f"{name:<{width}}  " + "  ".join(f"{v:>{cell}}" for v in row))
