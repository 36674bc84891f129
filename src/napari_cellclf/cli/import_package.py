"""`cellclf import PACKAGE --out MODEL`: a bioimage.io package made by `cellclf export` back
into a model file."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import out

NAME = "import"


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        NAME,
        help="turn a bioimage.io package made by `cellclf export` back into a model file",
        description="Read the napari-cellclf model file that `cellclf export` attaches to its "
        "bioimage.io packages (folder, rdf.yaml or .zip), check it against the sha256 in rdf.yaml "
        "and save it. Nothing is unpickled.",
    )
    parser.add_argument("package", metavar="PACKAGE", help="package folder, its rdf.yaml, or a .zip")
    parser.add_argument(
        "--out", "-o", required=True, metavar="MODEL", help="model file to write (.safetensors)"
    )
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    from ..bioimageio import import_bioimageio
    from ..modelfile import read_meta

    saved = import_bioimageio(Path(args.package), Path(args.out))
    meta = read_meta(saved)
    out(
        f"model ({', '.join(meta.class_names)}; {meta.tile_size} px tiles of "
        f"{', '.join(meta.channel_names)}) saved to {saved}"
    )
    return 0
