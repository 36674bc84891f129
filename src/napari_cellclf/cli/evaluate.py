"""`cellclf evaluate MODEL DATA`: accuracy beside balanced accuracy and chance, the verdict,
per-class precision/recall and the confusion matrix (all from evaluation.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import (
    DATA_HELP,
    PROG,
    err,
    out,
    progress,
)
from ._labelled import add_labelled_data_arguments, held_out, load_labelled

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
