"""How a GAN training run is driven (:class:`TrainOptions`): everything that is not the model/data config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["AMP_DTYPES", "TrainOptions"]

AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainOptions:
    """How to run training (everything that is not the model/data configuration).

    out_dir: snapshots, ``netG_epoch_{e}.pth``, ``log.jsonl`` and ``samples/`` go here.
    max_epochs: default ``cfg.TRAIN.MAX_EPOCH``; snapshot_every (epochs): default
        ``cfg.TRAIN.SNAPSHOT_INTERVAL`` (a snapshot after epoch index e when e % it == 0, and one
        at the end); sample_every (steps, 0 = only at the end); log_every (steps).
    max_minutes: stop after this much training time (then a final snapshot); None = no limit.
    amp: None, "bf16" or "fp16" (with a GradScaler); encoder_amp: the frozen DAMSM image encoder of
        the G step alone in "bf16" / "fp16" (its weights cast once, float32 outputs; default: amp's;
        the demo's bf16: ~1.2x the 64 px stage's images/s on an AVX512-BF16 CPU); compile: a
        torch.compile backend name
        ("inductor") or None; accum_steps: micro-batches per step (see the module docstring).
    sync_bn: SyncBatchNorm across processes (CUDA only).
    workers: DataLoader workers (default ``cfg.WORKERS``).
    on_nan: a loss, a D output or a gradient that is not finite: "stop" (raise
        :class:`~attngan_fast.training.trainer.NonFiniteLossError` before the optimizer step, so
        no snapshot holds the broken weights) or "skip" (skip that optimizer's step for the batch
        and restore the BatchNorm statistics of before the batch; ``log.jsonl`` counts the skipped
        optimizer steps in ``skipped``, and the loss of a skipped update is logged as NaN).
    eval_every (epochs, 0 = never): FID / KID (tf-fid, with the metrics extra) and R-precision of the
        EMA generator on the first ``eval_images`` test captions, appended to ``log.jsonl``
        (:mod:`attngan_fast.metrics.training_eval`).
    """

    out_dir: str
    seed: int = 100
    device: str = "cpu"
    max_epochs: Optional[int] = None
    snapshot_every: Optional[int] = None
    sample_every: int = 1000
    log_every: int = 1
    max_minutes: Optional[float] = None
    amp: Optional[str] = None
    encoder_amp: Optional[str] = None
    channels_last: bool = False
    compile: Optional[str] = None
    accum_steps: int = 1
    sync_bn: bool = False
    ema_decay: float = 0.999
    workers: Optional[int] = None
    num_samples: int = 8
    progress: bool = True
    on_nan: str = "stop"
    eval_every: int = 0
    eval_images: int = 256

    def __post_init__(self) -> None:
        for name in ("amp", "encoder_amp"):
            if getattr(self, name) not in (None, *AMP_DTYPES):
                raise ValueError(f"{name}: expected None, 'bf16' or 'fp16', got {getattr(self, name)!r}")
        if self.amp and self.encoder_amp not in (None, self.amp):
            raise ValueError(f"encoder_amp: expected None or amp's {self.amp!r} (amp sets the whole step's "
                             f"precision), got {self.encoder_amp!r}")
        if self.on_nan not in ("stop", "skip"):
            raise ValueError(f"on_nan: expected 'stop' or 'skip', got {self.on_nan!r}")
        for name, low in (("accum_steps", 1), ("log_every", 1), ("num_samples", 1), ("max_epochs", 1),
                          ("snapshot_every", 1), ("sample_every", 0), ("workers", 0)):
            value = getattr(self, name)
            if value is not None and value < low:
                raise ValueError(f"{name}: expected >= {low}, got {value}")
        if self.max_minutes is not None and not self.max_minutes >= 0:
            raise ValueError(f"max_minutes: expected >= 0 or None, got {self.max_minutes}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every: expected >= 0 (0 = never), got {self.eval_every}")
        if self.eval_images < 2:
            raise ValueError(f"eval_images: expected >= 2, got {self.eval_images}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected in [0, 1), got {self.ema_decay}")
