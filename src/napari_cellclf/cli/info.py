"""`cellclf info MODEL [--json]`: what a model file records about how it was made."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ._common import CLIError, out

NAME = "info"


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        NAME,
        help="show a model file's classes, data, split, runs, memorisation and comparisons",
        description="Print what MODEL records: classes and channels, the data it was trained on "
        "(tiles per class, sources), the train/validation split, every run's seed and result, "
        "memorisation warnings, and the baseline, evaluation and cross-test results when computed.",
    )
    parser.add_argument("model", metavar="MODEL", help="model file (.safetensors)")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    from ..modelfile import load_model
    from ..provenance import format_info, model_info

    path = Path(args.model)
    if not path.is_file():
        raise CLIError(f"{path}: no such model file")
    _, meta = load_model(path, device="cpu")
    info = model_info(meta)
    if args.json:
        out(json.dumps(info, indent=1))
    else:
        out(f"{path}")
        out(format_info(info))
    return 0
