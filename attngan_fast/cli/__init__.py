"""``attngan-fast``: the command line, one module per subcommand.

Each module in :data:`COMMANDS` defines ``add_parser(subparsers)`` (its options; it sets
``run=<function(args) -> exit code>`` as the parser default) and ``run(args)``, which turns the
parsed options into arguments of the library functions. The library never sees an argparse
namespace. :mod:`attngan_fast.cli.common` holds the options every subcommand shares.

Errors: :func:`main` is the one place they are reported, as ``error: <what>: <why>`` on stderr
with exit code 2 for usage errors (argparse's own, bad option values, :class:`~.common.UsageError`)
and 1 for failures (ValueError, OSError, ...); no traceback unless ``attngan-fast --debug CMD``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .._version import __version__
from .common import UsageError

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (
    "make_synthetic",
    "pretrain_damsm",
    "train",
    "generate",
    "evaluate",
    "fid_stats",
    "demo",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``attngan-fast`` parser with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="attngan-fast", description="AttnGAN with fused kernels.")
    parser.add_argument("--version", action="version", version=f"attngan_fast {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``attngan-fast`` console script; returns the exit code (0 done, 1 failed,
    2 usage error, 130 interrupted), having printed ``error: ...`` to stderr unless it is 0."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # argparse: --help / --version (0) or a usage error, already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args.run(args) or 0)
    except BaseException as e:
        if args.debug or isinstance(e, SystemExit):
            raise
        if isinstance(e, KeyboardInterrupt):
            print("error: interrupted", file=sys.stderr)
            return 130
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 2 if isinstance(e, UsageError) else 1


def error_message(e: BaseException) -> str:
    """``<what>: <why>`` for an exception: its message, with the file for an OSError and the
    exception type for one that is not a plain bad-input error."""
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return f"{e.filename}: {e.strerror}"
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if isinstance(e, (UsageError, ValueError, OSError, KeyError)):
        return text
    return f"{type(e).__name__}: {text} (attngan-fast --debug ... shows the traceback)"


if __name__ == "__main__":
    sys.exit(main())
