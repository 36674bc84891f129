"""`cellclf`: the command-line face of the engine (train, evaluate, predict, explain, report,
demo, export, import, merge, crosstest, info).

A thin face: argparse, files in and out, progress bars and messages. Every algorithm lives in the
engine modules and every setting's default, choices and help in `options.py`; labelled folders are
read by `datasets`. Engine modules are imported inside the commands. User mistakes (bad paths,
unknown classes, channel mismatches, invalid model files) end as one line `cellclf: error: ...`
on stderr and exit status 2, never a traceback.

Adding a command: write `cli/<name>.py` with `NAME`, `add_parser(commands)` (registers its
subparser and `set_defaults(handler=run)`) and `run(args) -> int`, then add the module to
`COMMANDS` below — the one registration point. Raise `CLIError` (or ValueError/OSError) for user
mistakes; shared helpers live in `cli/_common.py`.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Sequence

from .. import __version__
from . import (
    crosstest,
    demo,
    evaluate,
    explain,
    export,
    import_package,
    info,
    merge,
    predict,
    report,
    train,
)
from ._common import EXIT_INTERRUPTED, EXIT_USAGE, PROG, CLIError, err, one_line

# The registration point: one line per command, in the order `cellclf --help` lists them.
COMMANDS = (
    train,
    evaluate,
    predict,
    explain,
    demo,
    export,
    import_package,
    report,
    merge,
    crosstest,
    info,
)

__all__ = ["main", "build_parser", "CLIError", "COMMANDS", "PROG"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tile fluorescence fields of view, train a small CNN, classify whole fields "
        "and see why (gradient x input).",
        epilog="Run `cellclf <command> --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def _warning_printer():
    """A warnings.showwarning that prints each distinct warning once as `cellclf: warning: ...`."""
    shown: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = f"{PROG}: warning: {one_line(message) if isinstance(message, BaseException) else message}"
        if text not in shown:
            shown.add(text)
            err(text)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cellclf` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        # The demo parses its own options (--auto, --help ...); argparse.REMAINDER would not
        # pass an option that comes first.
        return demo.run_demo(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else EXIT_USAGE
    try:
        with warnings.catch_warnings():
            # A library's warning (numpy's "overflow encountered", ...) is one short line of ours,
            # once, not a source line dump on stderr.
            warnings.showwarning = _warning_printer()
            warnings.simplefilter("default")
            return args.handler(args)
    except KeyboardInterrupt:
        err(f"{PROG}: interrupted")
        return EXIT_INTERRUPTED
    except (CLIError, ValueError, OSError) as error:  # ImageReadError, ModelFileError are ValueErrors
        err(f"{PROG}: error: {one_line(error)}")
        return EXIT_USAGE
    except Exception as error:  # a bug, not a user mistake: say so, briefly
        if os.environ.get("CELLCLF_DEBUG"):
            raise
        err(
            f"{PROG}: error: unexpected {type(error).__name__}: {one_line(error)} "
            "(set CELLCLF_DEBUG=1 for the traceback)"
        )
        return 1
