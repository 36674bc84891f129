"""`cellclf merge CSV... --out CSV`: join the per-image CSVs of `predict --out-dir`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import CLIError, out

NAME = "merge"


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(NAME, help="join per-image prediction CSVs into one")
    parser.add_argument("csvs", nargs="+", metavar="CSV", help="CSV files or folders of them")
    parser.add_argument("--out", "-o", required=True, metavar="CSV", help="the joined CSV")
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    from ..distributed import merge_csvs

    paths: list[Path] = []
    for item in map(Path, args.csvs):
        paths += sorted(item.glob("*.csv")) if item.is_dir() else [item]
    target = Path(args.out).resolve()
    paths = [p for p in paths if p.resolve() != target]
    if not paths:
        raise CLIError("no CSV files to merge")
    n_rows = merge_csvs(paths, args.out)
    out(f"{n_rows} rows from {len(paths)} files written to {args.out}")
    return 0
