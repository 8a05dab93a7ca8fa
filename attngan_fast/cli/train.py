"""``attngan-fast train --cfg ... --out DIR [options]``: the GAN (also under ``torchrun``).

Exit codes: 0 done; 1 an error (``error: ...``; a diverging run too); 130 / 143 stopped by SIGINT /
SIGTERM after writing a snapshot to continue from with ``--resume`` (the shell's codes of those
signals, so that a scheduler sees the run did not finish).
"""
from __future__ import annotations

import argparse
import random
import signal
from pathlib import Path
from typing import Any

from ..backend import set_backend
from ..checkpoint import find_latest, load_snapshot
from ..config import from_dict
from ..training.distributed import gather_objects, init_distributed
from ..training.options import AMP_DTYPES, TrainOptions
from ..training.stop import exit_code
from ..training.trainer import NonFiniteLossError, train_gan
from .common import (
    UsageError,
    add_backend_argument,
    add_config_arguments,
    add_device_argument,
    add_progress_argument,
    add_threads_argument,
    config_from_args,
    nonnegative_float,
    nonnegative_int,
    number,
    positive_int,
    set_up_cpu,
)

# the options a command line can give; a resumed run takes the others (and these unless given) from its snapshot
_OPTION_ARGS = ("seed", "device", "amp", "encoder_amp", "channels_last", "compile", "accum_steps", "sync_bn",
                "max_epochs", "max_minutes", "snapshot_every", "sample_every", "log_every", "workers", "on_nan",
                "eval_every", "eval_images")


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train", help="train the AttnGAN generator and discriminators",
        description="Train G and the Ds (docs/original_attngan.md §7.1) against pre-trained DAMSM encoders "
                    "(TRAIN.NET_E). Multi-GPU: torchrun --nproc_per_node N -m attngan_fast.cli train ...",
    )
    add_config_arguments(p, required=False)
    p.add_argument("--out", required=True, help="output folder: snapshots, netG_epoch_*.pth, log.jsonl, samples/")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="SNAPSHOT",
                   help="continue from a snapshot (default: the latest in --out); the config and options "
                        "come from it unless given again")
    p.add_argument("--overwrite", action="store_true",
                   help="clear the run --out holds (its snapshots, netG/netD files, log.jsonl, run.json, samples) "
                        "and start afresh; without it (or --resume) a folder holding a run is refused")
    p.add_argument("--seed", type=int, default=None, help="seed (default: random in 1..10000, as the original)")
    add_device_argument(p)
    add_backend_argument(p)
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default=None, help="mixed precision (fp16 with a GradScaler)")
    p.add_argument("--encoder-amp", choices=tuple(AMP_DTYPES), default=None,
                   help="the frozen DAMSM image encoder of the G step alone in this precision (default: --amp's)")
    p.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile G and the Ds (default backend: inductor)")
    p.add_argument("--accum-steps", type=positive_int, default=None, help="micro-batches of TRAIN.BATCH_SIZE per step (1)")
    p.add_argument("--sync-bn", action="store_true", default=None,
                   help="SyncBatchNorm across processes (CUDA; the fused generator blocks then run the reference "
                        "path, with a warning)")
    p.add_argument("--max-epochs", type=positive_int, default=None, help="default TRAIN.MAX_EPOCH")
    p.add_argument("--max-minutes", type=nonnegative_float, default=None,
                   help="stop after this much training time (0: after one step)")
    p.add_argument("--snapshot-every", type=positive_int, default=None, help="epochs (default TRAIN.SNAPSHOT_INTERVAL)")
    p.add_argument("--sample-every", type=nonnegative_int, default=None,
                   help="steps between sample grids (1000; 0: at the end)")
    p.add_argument("--log-every", type=positive_int, default=None, help="steps between log.jsonl records (1)")
    p.add_argument("--workers", type=nonnegative_int, default=None, help="data loader workers (default WORKERS)")
    p.add_argument("--on-nan", choices=("stop", "skip"), default=None,
                   help="a non-finite loss or gradient: stop with a message, saving nothing of that step "
                        "(default), or skip that optimizer step (counted in log.jsonl's 'skipped')")
    p.add_argument("--eval-every", type=nonnegative_int, default=None,
                   help="epochs between FID/KID (tf-fid, metrics extra) + R-precision records in log.jsonl (0: never)")
    p.add_argument("--eval-images", type=number(int, 2), default=None, help="test captions for --eval-every (256)")
    add_progress_argument(p)
    add_threads_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    set_backend(args.backend)
    set_up_cpu(args.threads)
    given = {name: getattr(args, name) for name in _OPTION_ARGS if getattr(args, name) is not None}
    if args.overwrite and args.resume is not None:
        raise UsageError("--overwrite: cannot be combined with --resume (it would delete the run to resume)")
    resume, base = None, {}
    if args.resume is not None:
        resume = find_latest(args.out) if args.resume == "latest" else Path(args.resume)
        if resume is None:
            raise UsageError(f"--resume: no snapshot (checkpoint_epoch_*.pt) in {args.out}")
        snap = load_snapshot(resume)
        base = {k: v for k, v in snap["options"].items() if k not in ("out_dir", "progress")}
        cfg = config_from_args(args, base=from_dict(snap["config"]))
    elif args.cfg:
        cfg = config_from_args(args)
    else:
        raise UsageError("train needs --cfg (or --resume)")
    info = init_distributed(given.get("device", base.get("device") if resume else None))
    if "seed" not in given and "seed" not in base:  # as the original: random, the same on every rank
        given["seed"] = gather_objects(random.randint(1, 10000), info)[0]
    options = {**base, **given, "out_dir": args.out, "device": info.device.type, "progress": args.progress}
    try:
        summary = train_gan(cfg, TrainOptions(**options), resume=resume, dist_info=info, overwrite=args.overwrite)
    except NonFiniteLossError as e:
        latest = find_latest(args.out)
        raise ValueError(f"{e}; the latest snapshot is {latest if latest else 'none'}") from None
    if summary["interrupted"]:
        if info.is_main:
            print(f"interrupted by {summary['interrupted']} at step {summary['steps']}: snapshot {summary['snapshot']} "
                  f"written; continue with: attngan-fast train --out {args.out} --resume")
        return exit_code(signal.Signals[summary["interrupted"]])
    if info.is_main:
        print(f"trained {summary['epochs']} epochs, {summary['steps']} steps in {summary['seconds']:.0f} s; "
              f"last snapshot {summary['snapshot']}")
    return 0
