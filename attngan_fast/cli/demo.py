"""``attngan-fast demo [--minutes M] [--out DIR]``: the whole pipeline on a CPU, no data, no weights."""
from __future__ import annotations

import argparse
import signal
from typing import Any

from ..demo import DEFAULT_MINUTES, PROMPTS, run_demo
from ..training.stop import exit_code
from .common import add_progress_argument, add_threads_argument, number, set_up_cpu


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="synthetic birds -> DAMSM -> AttnGAN -> images + evaluation, on the CPU",
        description="Train everything from scratch on synthetic birds within --minutes and draw "
                    f"{len(PROMPTS)} prompts with their attention maps; no data set or weights needed.",
    )
    p.add_argument("--minutes", type=number(float, 3), default=DEFAULT_MINUTES,
                   help=f"time budget, at least 3 (default {DEFAULT_MINUTES:g})")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--seed", type=int, default=0)
    add_threads_argument(p)
    add_progress_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """0 when done; 128 + the signal's number when SIGINT / SIGTERM stopped it (130, 143)."""
    summary = run_demo(args.out, args.minutes, seed=args.seed, threads=set_up_cpu(args.threads),
                       progress=args.progress)
    return exit_code(signal.Signals[summary["interrupted"]]) if "interrupted" in summary else 0
