"""The frozen DAMSM image encoder of the GAN step with eval-mode BatchNorm folded into its convolutions.

In the G step the image encoder (CNN_ENCODER's Inception-v3 or the small CNN) is frozen and in eval
mode: each BatchNorm is a fixed per-channel affine map, so ``BN(conv(x)) = conv'(x)`` with

    scale = gamma / sqrt(running_var + eps),   W' = W * scale[o],   b' = beta + (b - running_mean) * scale

computed in float64 and rounded once to the weights' dtype. The forward then skips every BatchNorm
pass and the backward every BatchNorm backward; only the input gradient is computed (the folded copy's
parameters do not require grad). Equal to the unfolded encoder up to float rounding (tested: float64
1e-10 relative, float32 1e-4 relative to the output's scale). On a CPU the folded copy runs in
channels_last (oneDNN's preferred layout: the Inception encoder's forward and input gradient 1.2x
faster in float32, the small CNN's the same; outputs are returned contiguous).

:class:`FrozenImageEncoder` can also run in a lower precision (``dtype``: the demo's bfloat16 on a
CPU with bf16 arithmetic, AVX512-BF16 or AMX): the folded copy is cast once, its outputs and the
input's gradient are float32; on the reference backend the unfolded encoder runs under autocast.
"""
from __future__ import annotations

import copy
from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor
from torchvision.models.inception import BasicConv2d

from ..backend import get_backend

__all__ = ["fold_batchnorm", "fold_conv_bn", "FrozenImageEncoder"]


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d (with bias) computing ``bn(conv(x))`` of an eval-mode ``bn`` with running statistics."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn}: folding needs running statistics (track_running_stats=True)")
    folded = copy.deepcopy(conv)
    w = conv.weight.detach().double()
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    shift = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    folded.weight = nn.Parameter((w * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype), requires_grad=False)
    folded.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
    return folded


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.num_features == conv.out_channels


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` in eval mode in which every Conv2d followed by a BatchNorm2d (next in
    an ``nn.Sequential``, or the ``conv``/``bn`` pair of torchvision's Inception ``BasicConv2d``) is one
    conv with bias and the BatchNorm an ``nn.Identity``. Parameters of the copy do not require grad."""
    folded = copy.deepcopy(module).eval().requires_grad_(False)
    for sub in folded.modules():
        if isinstance(sub, BasicConv2d) and _foldable(sub.conv, sub.bn):
            sub.conv, sub.bn = fold_conv_bn(sub.conv, sub.bn), nn.Identity()
        elif isinstance(sub, nn.Sequential):
            names = list(sub._modules)
            for a, b in zip(names, names[1:]):
                if _foldable(sub._modules[a], sub._modules[b]):
                    sub._modules[a] = fold_conv_bn(sub._modules[a], sub._modules[b])
                    sub._modules[b] = nn.Identity()
    return folded


class FrozenImageEncoder(nn.Module):
    """A frozen image encoder for the G step: the folded copy (:func:`fold_batchnorm`) on the "fast"
    backend, the encoder itself on "reference". x: (B, 3, S, S) -> (regions (B, E, h, w), code (B, E)),
    contiguous, float32 when ``dtype`` is set (else the encoder's dtype).

    dtype: None (the encoder's own) or a lower precision (``torch.bfloat16`` / ``torch.float16``) for
    the encoder's arithmetic: the folded copy cast to it once ("fast"), autocast ("reference").
    The copy is made once, from the encoder's current weights: load weights before wrapping.
    """

    def __init__(self, encoder: nn.Module, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.folded = fold_batchnorm(encoder)
        self.dtype = dtype
        if dtype is not None:
            self.folded.to(dtype)

    def train(self, mode: bool = True) -> "FrozenImageEncoder":
        """Stays in eval mode (the folding holds for the running statistics only)."""
        return super().train(False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if get_backend() != "fast":
            if self.dtype is None:
                return self.encoder(x)
            with torch.autocast(x.device.type, dtype=self.dtype):
                regions, code = self.encoder(x)
            return regions.float(), code.float()
        if self.dtype is not None:
            x = x.to(self.dtype)
        if x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        regions, code = self.folded(x)
        out = regions.dtype if self.dtype is None else torch.float32
        return regions.to(out, memory_format=torch.contiguous_format), code.to(out)
