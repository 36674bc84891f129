"""`cellclf report MODEL DATA --out DIR`: an evaluation report of a model on labelled data.

DIR/report.html (one self-contained page), DIR/metrics.json, DIR/confusion.png and
DIR/gallery.png; DATA is read exactly as `cellclf evaluate` reads it."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import DATA_HELP, PROG, CLIError, err, out
from ._labelled import add_labelled_data_arguments

NAME = "report"


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        NAME,
        help="evaluation report (HTML, metrics.json, confusion matrix, gallery, attribution checks)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DATA_HELP + "\n\nWrites DIR/report.html (one self-contained file), "
        "DIR/metrics.json, DIR/confusion.png and DIR/gallery.png: accuracy beside balanced "
        "accuracy and chance, a verdict when the model is not clearly better than chance, "
        "rotation/flip agreement, attribution sanity checks and the most confidently right and "
        "wrong samples beside their attribution maps.",
    )
    add_labelled_data_arguments(parser)
    parser.add_argument("--out", "-o", required=True, metavar="DIR", help="folder to write (made if absent)")
    parser.add_argument(
        "--smoothgrad", action="store_true", help="gallery maps by SmoothGrad (less noisy, 16x the cost)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the tile samples checked (default 0)")
    parser.set_defaults(handler=run)
    return parser


def _check_out_dir(out_dir: Path, data: Path, model: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise CLIError(f"--out {out_dir}: is a file; give a folder")
    resolved = out_dir.resolve()
    if resolved == data.resolve() or data.resolve() in resolved.parents:
        raise CLIError(f"--out {out_dir}: is inside DATA; the report would become part of the data")
    if resolved == model.resolve():
        raise CLIError(f"--out {out_dir}: is the model file")


def run(args) -> int:
    from ..evaluation import format_metrics
    from ..report import make_report
    from ._labelled import held_out, load_labelled

    out_dir, data = Path(args.out), Path(args.data)
    _check_out_dir(out_dir, data, Path(args.model))
    classifier, meta, dataset, layout = load_labelled(args)
    dataset, split_note = held_out(meta, dataset, data, args.all_samples)
    if split_note:
        err(f"{PROG}: {split_note}")
    err(f"{PROG}: evaluating {len(dataset)} samples, checking rotations/flips and attribution maps")
    document = make_report(
        classifier,
        dataset,
        out_dir,
        method="smoothgrad" if args.smoothgrad else "gradient_x_input",
        seed=args.seed,
        details={
            "model": str(args.model),
            "data": str(data),
            "layout": layout,
            "split": "validation" if split_note and "validation split only" in split_note else "all",
        },
        title=f"Evaluation report: {Path(args.model).name} on {data.name or data}",
    )
    for line in format_metrics(document):
        out(line)
    if document.get("dihedral_agreement") is not None:
        out(f"same class under all 8 rotations/flips: {document['dihedral_agreement']:.3f}")
    checks = document.get("attribution") or {}
    out(
        "attribution: similarity to a random-weight network "
        f"{_num(checks.get('randomisation_similarity'))} (gradient x input), "
        f"{_num(checks.get('gradient_randomisation_similarity'))} (gradient); on cells "
        f"{_num(checks.get('foreground_share'))}, on the border {_num(checks.get('border_share'))}"
    )
    for warning in checks.get("warnings") or []:
        err(f"{PROG}: warning: {warning}")
    if document.get("verdict"):
        err(f"{PROG}: warning: {document['verdict']}")
    out(f"report written to {out_dir / 'report.html'}")
    return 0


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"
