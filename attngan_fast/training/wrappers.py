"""Modules the training step calls through: autocast with float32 outputs, D's loss as one module
(DDP), D heads whose NaN probabilities are recorded instead of reaching BCE."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..losses import discriminator_loss

__all__ = ["FloatOutputs", "to_float", "DiscriminatorLoss", "FiniteHeads"]


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


class FiniteHeads(nn.Module):
    """``netD`` whose heads (``COND_DNET``, ``UNCOND_DNET``) return their probabilities with NaN
    replaced by 0.5, and record that it happened in :attr:`bad` (a bool tensor, or None when
    nothing ran since :meth:`clear`). BCE rejects NaN (an error on the CPU, a device-side assert
    on CUDA), so a diverging run could not otherwise be stopped with a message; the trainer checks
    :attr:`bad` before each optimizer step. Finite outputs pass unchanged (gradients included).
    """

    def __init__(self, netD: nn.Module) -> None:
        super().__init__()
        self.module = netD
        self._flags: list[Tensor] = []
        for head in ("COND_DNET", "UNCOND_DNET"):
            inner = getattr(netD, head)
            setattr(self, head, None if inner is None else _NaNGuard(inner, self._flags))

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)

    @property
    def bad(self) -> Optional[Tensor]:
        return torch.stack(self._flags).any() if self._flags else None

    def clear(self) -> None:
        self._flags.clear()


class _NaNGuard(nn.Module):
    def __init__(self, head: nn.Module, flags: list[Tensor]) -> None:
        super().__init__()
        self.head = head
        self._flags = flags  # shared with the FiniteHeads owner (a plain list: no module cycle)

    def forward(self, *args: Any) -> Tensor:
        out = self.head(*args)
        nan = torch.isnan(out)
        self._flags.append(nan.any())
        return torch.where(nan, torch.full_like(out, 0.5), out)
