"""``attngan-fast generate``: images and attention pictures for captions from a trained generator."""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import torch

from ..backend import set_backend
from ..sampling import Generator
from .common import add_backend_argument, add_progress_argument, add_threads_argument, set_threads


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate", help="draw images for captions with a trained generator",
        description="Images (PNG per stage) and attention pictures for captions, from a training "
                    "snapshot or the original AttnGAN files (--netG --text-encoder --captions --cfg).",
    )
    p.add_argument("texts", nargs="*", metavar="CAPTION", help="captions (or use --file)")
    p.add_argument("--file", help="a text file with one caption per line")
    p.add_argument("--checkpoint", help="a training snapshot (checkpoint_epoch_*.pt)")
    p.add_argument("--netG", help="original format: G state_dict, e.g. netG_epoch_600.pth")
    p.add_argument("--text-encoder", help="original format: text_encoder200.pth")
    p.add_argument("--captions", help="original format: captions.pickle (the training vocabulary)")
    p.add_argument("--cfg", help="config name or file (with --netG), e.g. eval_bird")
    p.add_argument("--mask-mode", choices=("per_sample", "original"), default=None,
                   help="'original' reproduces the released checkpoints' attention masking")
    p.add_argument("--weights", choices=("ema", "current"), default="ema", help="snapshot: EMA or current G")
    p.add_argument("--out", default="generated", help="output folder (default: generated)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num", type=int, default=1, help="images per caption")
    p.add_argument("--batch-size", type=int, default=16,
                   help="images drawn and written at a time (memory is bounded by one batch)")
    p.add_argument("--on-unknown", choices=("skip", "error"), default="skip",
                   help="unknown words: drop them with a warning (default) or stop")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    add_backend_argument(p)
    add_threads_argument(p)
    add_progress_argument(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    set_backend(args.backend)
    set_threads(args.threads)
    texts = list(args.texts)
    if args.file:
        try:
            lines = Path(args.file).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: --file {args.file}: {e}") from None
        texts += [line.strip() for line in lines if line.strip()]
    if not texts:
        raise SystemExit("error: no captions (give them as arguments or with --file)")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        generator = Generator.from_checkpoint(
            args.checkpoint, netG=args.netG, text_encoder=args.text_encoder, captions=args.captions,
            cfg=args.cfg, device=device, mask_mode=args.mask_mode, weights=args.weights,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unknown words are reported below, once per caption
            written = generator.generate_to(args.out, texts, seed=args.seed, num=args.num, batch_size=args.batch_size,
                                            on_unknown=args.on_unknown, progress=args.progress)
    except KeyError as e:  # on_unknown="error"
        raise SystemExit(f"error: {e.args[0]}") from None
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    for text, missing in zip(written.texts, written.unknown):
        if missing:
            print(f"unknown word(s) dropped from {text!r}: {', '.join(missing)}")
    print(f"wrote {written.files} images for {len(texts)} caption(s) x {args.num} to {args.out}")
    return 0
