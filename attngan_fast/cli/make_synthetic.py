"""``attngan-fast make-synthetic DIR --n N``: synthetic birds in the original birds layout."""
from __future__ import annotations

import argparse
import time
from typing import Any

from ..data.synthetic import write_birds_layout
from .common import open_fraction, positive_int


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("make-synthetic", help="write synthetic birds in the original birds layout",
                              description=(write_birds_layout.__doc__ or "").split("\n\n")[0])
    p.add_argument("dir", help="output folder (becomes a DATA_DIR)")
    p.add_argument("--n", type=positive_int, default=2500, help="number of images, train + test (default 2500)")
    p.add_argument("--size", type=positive_int, default=256, help="crop size the renders are made for (default 256)")
    p.add_argument("--test-fraction", type=open_fraction, default=0.2,
                   help="share of images in the test split, in (0, 1) (default 0.2)")
    p.add_argument("--seed", type=int, default=0, help="the set's seed (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the synthetic set already in DIR (its images, captions and pickles)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    counts = write_birds_layout(args.dir, args.n, size=args.size, test_fraction=args.test_fraction, seed=args.seed,
                                overwrite=args.overwrite)
    print(f"wrote {counts['train']} train + {counts['test']} test synthetic birds to {args.dir} "
          f"in {time.perf_counter() - start:.1f} s")
    return 0
