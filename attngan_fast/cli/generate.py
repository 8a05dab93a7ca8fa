"""``attngan-fast generate``: images and attention pictures for captions from a trained generator."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

from ..backend import set_backend
from .common import (
    UsageError,
    add_backend_argument,
    add_generator_arguments,
    add_progress_argument,
    add_threads_argument,
    generator_from_args,
    positive_int,
    set_up_cpu,
)


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="draw images for captions with a trained generator",
        description="Images (PNG per stage) and attention pictures for captions, from a training "
                    "snapshot or the original AttnGAN files (--netG --text-encoder --captions --cfg).",
    )
    p.add_argument("texts", nargs="*", metavar="CAPTION", help="captions (or use --file)")
    p.add_argument("--file", help="a text file with one caption per line")
    add_generator_arguments(p)
    p.add_argument("--out", default="generated", help="output folder (default: generated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num", type=positive_int, default=1, help="images per caption")
    p.add_argument("--batch-size", type=positive_int, default=16,
                   help="images drawn and written at a time (memory is bounded by one batch)")
    p.add_argument("--on-unknown", choices=("skip", "error"), default="skip",
                   help="unknown words: drop them with a warning (default) or stop")
    add_backend_argument(p)
    add_threads_argument(p)
    add_progress_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    set_backend(args.backend)
    set_up_cpu(args.threads)
    texts = list(args.texts)
    if args.file:
        try:
            lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ValueError(f"--file {args.file}: not UTF-8 text ({e})") from None
        texts += [line.strip() for line in lines if line.strip()]
    if not texts:
        raise UsageError("no captions (give them as arguments or with --file)")
    generator = generator_from_args(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown words are reported below, once per caption
        written = generator.generate_to(args.out, texts, seed=args.seed, num=args.num, batch_size=args.batch_size,
                                        on_unknown=args.on_unknown, progress=args.progress)  # KeyError: unknown word
    for text, missing in zip(written.texts, written.unknown):
        if missing:
            print(f"unknown word(s) dropped from {text!r}: {', '.join(missing)}")
    print(f"wrote {written.files} images for {len(texts)} caption(s) x {args.num} to {args.out}")
    return 0
