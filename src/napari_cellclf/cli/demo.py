"""`cellclf demo [--auto ...]`: napari with sample data and the widget docked (the demo's own
options are parsed by napari_cellclf._demo)."""

from __future__ import annotations

import argparse

from ._common import EXIT_USAGE, PROG, err, one_line

NAME = "demo"


def add_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        NAME, help="open napari with sample data and the widget docked", add_help=False
    )
    parser.add_argument("demo_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)
    return parser


def run(args) -> int:
    return run_demo(list(args.demo_args))


def run_demo(argv: list[str]) -> int:
    # Imported here: only `demo` pulls in napari and Qt.
    try:
        from .._demo import main as demo_main

        return int(demo_main(argv) or 0)
    except SystemExit as exit_:  # `cellclf demo --help` or a usage error in the demo's parser
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    except ImportError as error:  # napari or a Qt binding missing
        err(
            f"{PROG}: error: the demo needs napari with a Qt binding "
            f"(pip install 'napari[all]'): {one_line(error)}"
        )
        return EXIT_USAGE
