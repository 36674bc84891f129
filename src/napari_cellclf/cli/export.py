"""`cellclf export MODEL --format bioimageio --out DIR_OR_ZIP`: a model file as a bioimage.io package."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CLIError, add_channels, model_channels, note, out, parse_channels, read_field

NAME = "export"
FORMATS = ("bioimageio",)


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        NAME,
        help="write a model as a bioimage.io model package (folder or .zip)",
        description="Write MODEL as a bioimage.io (format 0.5) model package that bioimageio.core, "
        "deepImageJ-style consumers and `cellclf import` can run; it is tested with bioimageio.core "
        "before this command says it is done. Needs the extra: pip install 'napari-cellclf[bioimageio]'.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument(
        "--format", choices=FORMATS, default="bioimageio", help="package format (default bioimageio)"
    )
    parser.add_argument(
        "--out",
        "-o",
        required=True,
        metavar="DIR_OR_ZIP",
        help="new (or empty) folder, or a path ending in .zip",
    )
    parser.add_argument(
        "--sample",
        metavar="IMAGE",
        help="a field whose foreground tiles become the package's test input and cover "
        "(default: reproducible noise in the training intensity range)",
    )
    add_channels(parser, for_model=True)
    parser.add_argument("--name", help="package name (default: cellclf <class> vs <class>)")
    parser.add_argument("--author", action="append", metavar="NAME", help="author (repeat for several)")
    parser.add_argument(
        "--license", default="CC-BY-4.0", metavar="SPDX", help="licence of the model (default CC-BY-4.0)"
    )
    parser.add_argument(
        "--github-user", metavar="USER", help="maintainer on GitHub (bioimage.io asks for one to upload)"
    )
    parser.add_argument(
        "--skip-test",
        action="store_true",
        help="do not run bioimageio.core's test of the package (it takes seconds)",
    )
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    try:
        from loguru import logger

        from .. import bioimageio
    except ImportError:
        raise CLIError(
            "bioimage.io export needs the extra: pip install 'napari-cellclf[bioimageio]'"
        ) from None
    from ..modelfile import read_meta

    logger.disable("bioimageio")  # its INFO lines would bury ours; failures still come back
    model_path = Path(args.model)
    if not model_path.is_file():
        raise CLIError(f"{model_path}: no such model file")
    meta = read_meta(model_path)
    refusal = bioimageio.export_refusal(meta)  # before a sample field is read for nothing
    if refusal:
        raise CLIError(f"{model_path}: {refusal}")
    field = None
    if args.sample:
        sample = Path(args.sample)
        _, cyx, names = read_field(sample)
        field = cyx[model_channels(meta, names, parse_channels(args.channels), sample)]
    try:
        result = bioimageio.export_bioimageio(
            model_path,
            Path(args.out),
            field_cyx=field,
            name=args.name,
            authors=args.author,
            license=args.license,
            github_user=args.github_user,
        )
    except ImportError as error:
        raise CLIError(str(error)) from None
    for line in result.notes:
        note(line)
    out(f"bioimage.io package written to {result.path}")
    if not args.skip_test:
        summary = bioimageio.run_bioimageio_test(result.path)
        if summary.status != "passed":
            raise CLIError(
                f"bioimageio.core's test of {result.path} did not pass ({summary.status}): "
                + "; ".join(f"{d.name}: {e.msg}" for d in summary.details for e in d.errors)
            )
        out("bioimageio.core test: passed (the package reproduces napari-cellclf's probabilities)")
    return 0
