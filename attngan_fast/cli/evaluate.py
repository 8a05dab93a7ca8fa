"""``attngan-fast evaluate``: score a generator (R-precision, attribute accuracy, IS, FID)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from ..metrics.evaluate import METRICS, evaluate_generator, format_table
from ..metrics.fid import PROTOCOLS, RESIZE_FILTERS
from ..sampling import Generator
from ..training.damsm import load_encoders
from .common import (
    UsageError,
    add_device_argument,
    add_progress_argument,
    add_threads_argument,
    device_from_args,
    positive_int,
    set_up_cpu,
)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="score a generator: R-precision, attribute accuracy, FID, KID, IS",
        description="Generate an image per test caption and score the images; prints a table and "
                    "writes JSON.",
    )
    p.add_argument("--checkpoint", help="a training snapshot (checkpoint_epoch_*.pt)")
    p.add_argument("--netG", help="original format: G state_dict (with --text-encoder, --captions, --cfg)")
    p.add_argument("--text-encoder", help="original format: the text encoder G was trained with")
    p.add_argument("--captions", help="original format: captions.pickle")
    p.add_argument("--cfg", help="config name or file (default: the snapshot's)")
    p.add_argument("--damsm", help="DAMSM text_encoder<N>.pth (image encoder next to it) for R-precision "
                                   "(default: the config's TRAIN.NET_E)")
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated, of {','.join(METRICS)} (default: r_precision, plus attributes "
                        "for synthetic birds, plus fid,kid when a protocol is available, plus is with "
                        "--inception-weights)")
    p.add_argument("--fid-protocol", choices=PROTOCOLS, default=None,
                   help="FID/KID features: tf-fid (the TF FID Inception of the metrics extra; default when "
                        "installed) or torchvision-legacy (early pytorch-fid; needs --inception-weights)")
    p.add_argument("--resize", choices=RESIZE_FILTERS, default=None,
                   help="resize filter to 299 px (default: bilinear-tf for tf-fid, bilinear for torchvision-legacy)")
    p.add_argument("--fid-stats", help="reference statistics (.npz of `attngan-fast fid-stats`) instead of the "
                                       "real test images; must match the protocol")
    p.add_argument("--inception-weights", help="torchvision inception_v3 state_dict file: the classifier of is, "
                                               "and the network of --fid-protocol torchvision-legacy")
    p.add_argument("--num-images", type=positive_int, default=None,
                   help="images to generate (default: one per test image)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=positive_int, default=32)
    add_device_argument(p)
    p.add_argument("--json", default="evaluation.json", help="where to write the results (default evaluation.json)")
    add_threads_argument(p)
    add_progress_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    set_up_cpu(args.threads)
    device = device_from_args(args)
    generator = Generator.from_checkpoint(args.checkpoint, netG=args.netG, text_encoder=args.text_encoder,
                                          captions=args.captions, cfg=args.cfg, device=device)
    cfg = generator.cfg
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    encoders = None
    if metrics is None or "r_precision" in metrics:
        damsm = args.damsm or cfg.TRAIN.NET_E
        if not damsm:
            raise UsageError("R-precision: give --damsm text_encoder<N>.pth (the config has no TRAIN.NET_E)")
        encoders = load_encoders(cfg, generator.vocab.n_words, damsm, device=device)
    result = evaluate_generator(generator, cfg, metrics=metrics, damsm_encoders=encoders,
                                inception_weights=args.inception_weights, fid_protocol=args.fid_protocol,
                                resize=args.resize, fid_stats=args.fid_stats, num_images=args.num_images,
                                seed=args.seed, batch_size=args.batch_size, progress=args.progress)
    print(format_table(result))
    atomic_write_json(Path(args.json), result)
    print(f"wrote {args.json}")
    return 0
