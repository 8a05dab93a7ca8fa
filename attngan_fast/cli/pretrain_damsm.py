"""``attngan-fast pretrain-damsm --cfg ... [--out DIR] [--resume]``: DAMSM encoder pre-training."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..training.damsm import STATE_FILE, pretrain_damsm
from .common import add_config_arguments, add_progress_argument, add_threads_argument, config_from_args, set_threads


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("pretrain-damsm", help="pre-train the DAMSM text and image encoders",
                              description="Pre-train the DAMSM encoders as the original pretrain_DAMSM.py; "
                                          "prints the test split's R-precision at the end.")
    add_config_arguments(p)
    p.add_argument("--out", help="run folder (default output/<DATASET_NAME>_<CONFIG_NAME>_<time>; with --resume "
                                 "and no --out, the newest such folder that holds a state)")
    p.add_argument("--resume", action="store_true", help=f"continue the run in --out from Model/{STATE_FILE}")
    p.add_argument("--seed", type=int, help="random seed (default: random in [1, 10000], as the original)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available and CUDA: True)")
    add_threads_argument(p)
    add_progress_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    threads = set_threads(args.threads)
    prefix = f"{cfg.DATASET_NAME}_{cfg.CONFIG_NAME or 'DAMSM'}"
    out = args.out
    if out is None and args.resume:
        runs = sorted((p for p in Path("output").glob(f"{prefix}_*") if (p / "Model" / STATE_FILE).is_file()),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise SystemExit(f"error: --resume: no output/{prefix}_*/Model/{STATE_FILE} found; pass --out")
        out = runs[-1]
    elif out is None:
        out = Path("output") / f"{prefix}_{time.strftime('%Y_%m_%d_%H_%M_%S')}"
    elif not args.resume and (Path(out) / "Model" / STATE_FILE).is_file():
        raise SystemExit(f"error: {out} holds a run already; pass --resume to continue it or choose another --out")
    start = time.perf_counter()
    summary = pretrain_damsm(cfg, out, resume=args.resume, seed=args.seed, device=args.device,
                             progress=args.progress)
    rp = summary.get("r_precision")
    print(json.dumps({"out": str(out), "wall_s": round(time.perf_counter() - start, 1), "threads": threads,
                      "r_precision": None if rp is None else f"{rp['mean']:.2f} ± {rp['std']:.2f} %"}))
    return 0
