"""``attngan-fast``: the command line, one module per subcommand.

Each module in :data:`COMMANDS` defines ``add_parser(subparsers)`` (its options; it sets
``run=<function(args) -> exit code>`` as the parser default) and ``run(args)``, which turns the
parsed options into arguments of the library functions. The library never sees an argparse
namespace. :mod:`attngan_fast.cli.common` holds the options every subcommand shares.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from .._version import __version__

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = (
    "make_synthetic",
    "pretrain_damsm",
    "train",
    "generate",
    "evaluate",
    "fid_stats",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``attngan-fast`` parser with every subcommand of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="attngan-fast", description="AttnGAN with fused kernels.")
    parser.add_argument("--version", action="version", version=f"attngan_fast {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``attngan-fast`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
