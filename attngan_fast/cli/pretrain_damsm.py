"""``attngan-fast pretrain-damsm --cfg ... [--out DIR] [--resume]``: DAMSM encoder pre-training."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..training.damsm import STATE_FILE, pretrain_damsm, saved_config
from .common import (
    UsageError,
    add_config_arguments,
    add_progress_argument,
    add_threads_argument,
    config_from_args,
    set_up_cpu,
)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("pretrain-damsm", help="pre-train the DAMSM text and image encoders",
                              description="Pre-train the DAMSM encoders as the original pretrain_DAMSM.py; "
                                          "prints the test split's R-precision at the end.")
    add_config_arguments(p, required=False)
    p.add_argument("--out", help="run folder (default output/<DATASET_NAME>_<CONFIG_NAME>_<time>; with --resume "
                                 "and no --out, the newest folder under output/ that holds a state)")
    p.add_argument("--resume", action="store_true",
                   help=f"continue the run in --out from Model/{STATE_FILE} with its saved config (--cfg not "
                        "needed; --set may change TRAIN.MAX_EPOCH, TRAIN.SNAPSHOT_INTERVAL, WORKERS, CUDA, GPU_ID)")
    p.add_argument("--seed", type=int, help="random seed (default: random in [1, 10000], as the original)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available and CUDA: True)")
    add_threads_argument(p)
    add_progress_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.resume and not args.cfg:
        raise UsageError("pretrain-damsm needs --cfg (or --resume)")
    cfg = config_from_args(args) if args.cfg else None
    threads = set_up_cpu(args.threads)
    out = args.out
    if out is None and args.resume:
        pattern = f"{cfg.DATASET_NAME}_{cfg.CONFIG_NAME or 'DAMSM'}_*" if cfg else "*"
        runs = sorted((p for p in Path("output").glob(pattern) if (p / "Model" / STATE_FILE).is_file()),
                      key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UsageError(f"--resume: no output/{pattern}/Model/{STATE_FILE} found; pass --out")
        out = runs[-1]
    elif out is None:
        out = Path("output") / f"{cfg.DATASET_NAME}_{cfg.CONFIG_NAME or 'DAMSM'}_{time.strftime('%Y_%m_%d_%H_%M_%S')}"
    elif not args.resume and (Path(out) / "Model" / STATE_FILE).is_file():
        raise UsageError(f"--out {out}: holds a run already; pass --resume to continue it or choose another --out")
    if args.resume and cfg is None and args.set:  # the saved config with the --set changes (checked when resuming)
        cfg = config_from_args(args, base=saved_config(out))
    start = time.perf_counter()
    summary = pretrain_damsm(cfg, out, resume=args.resume, seed=args.seed, device=args.device,
                             progress=args.progress)
    rp = summary.get("r_precision")
    print(json.dumps({"out": str(out), "wall_s": round(time.perf_counter() - start, 1), "threads": threads,
                      "r_precision": None if rp is None else f"{rp['mean']:.2f} ± {rp['std']:.2f} %"}))
    return 0
