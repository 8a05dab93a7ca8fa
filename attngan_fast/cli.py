"""``attngan-fast``: the command line. Each subcommand lives in the module it belongs to.

A module listed in :data:`COMMAND_MODULES` defines ``register_cli(subparsers)``, which adds its
subparser(s) and sets ``run=<function(args) -> exit code>`` as the parser default; this file only
parses and dispatches. :func:`add_config_arguments` / :func:`config_from_args` give every
command the same ``--cfg`` / ``--set KEY=VALUE`` options.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

import yaml

from . import config
from ._version import __version__

__all__ = ["main", "add_config_arguments", "config_from_args", "overrides_from_args", "add_threads_argument",
           "set_threads", "COMMAND_MODULES"]

COMMAND_MODULES = (
    "attngan_fast.data.synthetic",  # make-synthetic
    "attngan_fast.training.damsm",  # pretrain-damsm
    "attngan_fast.training.gan",  # train
    "attngan_fast.sampling",  # generate
    "attngan_fast.metrics.evaluate",  # evaluate
    "attngan_fast.demo",  # demo
)


def add_config_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--cfg NAME_OR_PATH`` and repeatable ``--set KEY=VALUE`` (value parsed as YAML)."""
    parser.add_argument("--cfg", required=required,
                        help=f"config file or shipped name ({', '.join(config.available())})")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set TRAIN.MAX_EPOCH=5 (repeatable)")


def overrides_from_args(args: argparse.Namespace) -> dict:
    """The ``--set KEY=VALUE`` overrides as ``{"KEY": value}`` (values parsed as YAML)."""
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return overrides


def config_from_args(args: argparse.Namespace, base: Optional[config.Config] = None) -> config.Config:
    """The config named by ``--cfg`` (or ``base`` when ``--cfg`` is not given) with the ``--set``
    overrides applied."""
    try:
        if base is not None and not args.cfg:
            return base.replace(**overrides_from_args(args))
        return config.load(args.cfg, **overrides_from_args(args))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N``: torch's CPU threads; default: the cores other processes leave free."""
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's count, lowered to "
                                                    "the cores not already busy per the 1-minute load average)")


def set_threads(requested: Optional[int]) -> int:
    """Set torch's intra-op threads to ``requested``, or by default to ``cores - load`` (at least 1).

    Many small ops each end in a barrier of all threads; on a CPU that other jobs keep busy, threads
    that wait for a descheduled peer spin, and a step gets 10x-50x slower than with fewer threads.
    Returns the count set.
    """
    import torch

    if requested is None:
        requested = torch.get_num_threads()
        try:
            busy = os.getloadavg()[0]
        except OSError:  # no load average on this platform
            busy = 0.0
        requested = max(1, min(requested, int((os.cpu_count() or requested) - busy + 0.5)))
    if requested < 1:
        raise SystemExit(f"error: --threads {requested}: expected >= 1")
    torch.set_num_threads(requested)
    return requested


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attngan-fast", description="AttnGAN with fused kernels.")
    parser.add_argument("--version", action="version", version=f"attngan_fast {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(name).register_cli(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``attngan-fast`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
