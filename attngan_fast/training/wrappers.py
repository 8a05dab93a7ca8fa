"""Modules the training step calls through: autocast with float32 outputs, D's loss as one module (DDP)."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from ..losses import discriminator_loss

__all__ = ["FloatOutputs", "to_float", "DiscriminatorLoss"]


class FloatOutputs(nn.Module):
    """Runs ``module`` under autocast and returns its tensors as float32 (the BCE and DAMSM losses
    then run outside autocast, where BCE is allowed). D's heads are wrapped the same way."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype
        for head in ("COND_DNET", "UNCOND_DNET"):
            if hasattr(module, head):
                inner = getattr(module, head)
                setattr(self, head, None if inner is None else FloatOutputs(inner, device_type, dtype))

    def forward(self, *args: Any) -> Any:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.module(*args)
        return to_float(out)


def to_float(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(to_float(o) for o in out)
    return out


class DiscriminatorLoss(nn.Module):
    """``discriminator_loss`` as a module, so that DDP sees every D parameter used in one forward."""

    def __init__(self, netD: nn.Module) -> None:
        super().__init__()
        self.netD = netD

    def forward(self, real: Tensor, fake: Tensor, cond: Tensor, real_labels: Tensor, fake_labels: Tensor) -> Tensor:
        return discriminator_loss(self.netD, real, fake, cond, real_labels, fake_labels)
