"""``attngan-fast fid-stats DATA_OR_CFG --out stats.npz``: FID reference statistics, computed once."""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .. import config
from ..metrics.evaluate import reference_statistics
from ..metrics.fid import PROTOCOLS, RESIZE_FILTERS, ReferenceStats, build_extractor, extract_features, folder_batches
from .common import (
    add_device_argument,
    add_progress_argument,
    add_threads_argument,
    device_from_args,
    number,
    overrides_from_args,
    positive_int,
    set_up_cpu,
)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "fid-stats", help="FID reference statistics (mean, covariance, features) of a data set",
        description="Inception features of real images, their mean and covariance, written as .npz with the "
                    "protocol inside (checked when `evaluate --fid-stats` loads it). DATA_OR_CFG: a folder of "
                    "images, or a config (name or file) whose split's images are used as evaluate uses them.",
    )
    p.add_argument("source", metavar="DATA_OR_CFG", help="image folder (recursive) or config name / file")
    p.add_argument("--out", required=True, help="the .npz to write")
    p.add_argument("--split", choices=("train", "test"), default="test", help="config's split (default test)")
    p.add_argument("--num", type=number(int, 2), default=None, help="first N images only, N >= 2 (default all)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable)")
    p.add_argument("--fid-protocol", choices=PROTOCOLS, default=None,
                   help="tf-fid (default when the metrics extra is installed) or torchvision-legacy")
    p.add_argument("--resize", choices=RESIZE_FILTERS, default=None, help="resize filter (default: the protocol's)")
    p.add_argument("--inception-weights", help="torchvision inception_v3 state_dict (torchvision-legacy)")
    p.add_argument("--batch-size", type=positive_int, default=50)
    p.add_argument("--seed", type=int, default=0, help="the data set's seed (caption draws; images do not depend on it)")
    add_device_argument(p)
    add_threads_argument(p)
    add_progress_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    set_up_cpu(args.threads)
    device = device_from_args(args)
    start = time.perf_counter()
    extractor = build_extractor(args.fid_protocol, resize=args.resize, inception_weights=args.inception_weights,
                                device=device)
    if Path(args.source).is_dir():
        batches = folder_batches(args.source, args.batch_size)
        if args.num is not None:
            batches = _first(batches, args.num)
        features, _ = extract_features(extractor, batches, progress=args.progress, desc="inception features")
        stats = ReferenceStats.from_features(features, extractor.protocol,
                                             f"folder {args.source}, {len(features)} images")
    else:
        from ..data import build_dataset

        cfg = config.load(args.source, **overrides_from_args(args))
        dataset = build_dataset(cfg, args.split, seed=args.seed, augment=False)
        count = min(args.num or len(dataset), len(dataset))
        stats = reference_statistics(extractor, dataset, count=count, batch_size=args.batch_size,
                                     progress=args.progress,
                                     description=f"{cfg.DATASET_NAME} {args.split} split, {count} real images")
    stats.save(args.out)
    print(f"wrote {args.out}: {stats.count} images ({stats.source}), protocol {extractor.name}, resize "
          f"{extractor.resize}, in {time.perf_counter() - start:.1f} s")
    return 0


def _first(batches: Any, count: int) -> Any:
    """The batches holding the first ``count`` images."""
    left = count
    for batch in batches:
        if left <= 0:
            return
        yield batch[:left]
        left -= len(batch)
