"""Metrics during training (DF-GAN's practice): every ``eval_every`` epochs, FID / KID (``tf-fid``
protocol, when the metrics extra is installed) and R-precision of the EMA generator on a fixed set
of test captions, appended to ``log.jsonl`` so that a run's best snapshot can be chosen.

The captions are the first ``eval_images`` of :func:`~attngan_fast.metrics.evaluate.split_captions`
(test split, seed 0 draws), the noise is seeded (the same every evaluation), the FID reference is
the first ``eval_images`` real test images (features computed once, at the first evaluation).
R-precision uses the DAMSM encoders the GAN trains against, with the whole test split's captions as
the mismatch pool. Only the main process evaluates.
"""
from __future__ import annotations

import json
import time
import warnings
from typing import Any, Optional

import numpy as np
import torch
from tqdm import tqdm

from ..config import Config
from ..data.text import Vocabulary
from .evaluate import feature_metrics, reference_statistics, split_captions
from .fid import METRICS_EXTRA_HINT, ReferenceStats, build_extractor, extract_features, tf_fid_available
from .r_precision import encode_captions, encode_images, r_precision

__all__ = ["EpochEvaluator"]


class EpochEvaluator:
    """Called by the trainer after every epoch; evaluates after epoch index e when
    ``(e + 1) % every == 0`` and appends ``{"epoch": e, "step", "eval_images", "fid", "kid",
    "kid_stderr", "r_precision", "fid_protocol", "eval_seconds"}`` to ``out_dir/log.jsonl``."""

    def __init__(self, cfg: Config, every: int, num_images: int, device: torch.device, seed: int = 0,
                 progress: bool = False) -> None:
        from ..data import build_dataset

        self.every, self.seed, self.progress, self.device = every, seed, progress, device
        self.cfg = cfg
        self.test_set = build_dataset(cfg, "test", seed=0, augment=False)
        self.captions, self.lens, owners = split_captions(self.test_set, num_images)
        self.class_ids = self.test_set.class_ids[owners]
        self.extractor = build_extractor("tf-fid", device=device) if tf_fid_available() else None
        if self.extractor is None:
            warnings.warn(f"eval_every: R-precision only; {METRICS_EXTRA_HINT}", stacklevel=2)
        self.reference: Optional[ReferenceStats] = None

    def __call__(self, trainer: Any, epoch: int) -> Optional[dict[str, Any]]:
        """Evaluate ``trainer``'s EMA generator after epoch index ``epoch`` (when due)."""
        if (epoch + 1) % self.every:
            return None
        from ..sampling import Generator

        start = time.perf_counter()
        trainer.sync_ema_buffers()  # the EMA generator runs with G's BatchNorm statistics, as in the samples
        vocab = Vocabulary(dict(enumerate(trainer.ixtoword)), {w: i for i, w in enumerate(trainer.ixtoword)})
        generator = Generator(trainer.netG_ema, trainer.text_encoder, vocab, self.cfg, self.device)
        images = generator.generate_ids(self.captions, self.lens, seed=self.seed, progress=self.progress)[0][-1]
        record: dict[str, Any] = {"epoch": epoch, "step": trainer.step, "eval_images": len(images)}
        if self.extractor is not None:
            if self.reference is None:
                self.reference = reference_statistics(self.extractor, self.test_set, count=len(images),
                                                      progress=self.progress)
            features, _ = extract_features(self.extractor, images, progress=self.progress)
            scores = feature_metrics(self.reference, features)
            record["fid"] = scores["fid"]
            if "kid" in scores:
                record["kid"], record["kid_stderr"] = scores["kid"]["mean"], scores["kid"]["stderr"]
            record["fid_protocol"] = f"{self.extractor.name}/{self.extractor.resize}"
        record["r_precision"] = self._r_precision(trainer, images)
        record["eval_seconds"] = time.perf_counter() - start
        with open(trainer.out_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        tqdm.write(f"epoch {epoch}: eval " + " ".join(
            f"{k} {v:.4g}" for k, v in record.items() if k in ("fid", "kid", "r_precision")))
        return record

    def _r_precision(self, trainer: Any, images: torch.Tensor) -> float:
        folds = min(10, len(images))
        pool_caps, pool_lens, _, pool_classes = self.test_set.caption_pool(np.random.default_rng(self.seed))
        result = r_precision(encode_images(trainer.image_encoder, images),
                             encode_captions(trainer.text_encoder, self.captions, self.lens), self.class_ids,
                             encode_captions(trainer.text_encoder, pool_caps, pool_lens), pool_classes,
                             folds=folds, seed=self.seed)
        return result.mean
