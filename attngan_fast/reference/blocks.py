"""GLU, the generator and the discriminator blocks (original ``code/model.py``; docs/original_attngan.md
§2), plain PyTorch.

The twins of the fused ops of ``attngan_fast.ops.blocks`` and ``attngan_fast.ops.down_blocks``: the same arguments, the original's
layers as functions. BatchNorm follows ``F.batch_norm``: ``training=True`` normalizes with the
batch statistics and updates the running statistics in place when they are given.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BatchNormArgs", "down_block", "glu", "img_conv_tanh", "res_block", "tiled_code_conv", "up_block",
           "upsample_conv3x3"]


class BatchNormArgs(NamedTuple):
    """One BatchNorm2d over C channels: affine weight/bias (C,), optional running stats (C,)."""

    weight: Tensor
    bias: Tensor
    running_mean: Optional[Tensor] = None
    running_var: Optional[Tensor] = None
    momentum: float = 0.1
    eps: float = 1e-5


def glu(x: Tensor) -> Tensor:
    """The original GLU module: ``a * sigmoid(b)`` with ``a, b`` the two halves of dim 1.

    x: (N, 2k, ...) -> (N, k, ...); equal to ``F.glu(x, 1)``.
    """
    nc = x.size(1)
    if nc % 2 != 0:
        raise ValueError(f"x: GLU needs an even channel count (dim 1), got shape {tuple(x.shape)}")
    half = nc // 2
    return x[:, :half] * torch.sigmoid(x[:, half:])


def _batch_norm(y: Tensor, bn: BatchNormArgs, training: bool) -> Tensor:
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, training, bn.momentum, bn.eps)


def upsample_conv3x3(x: Tensor, weight: Tensor) -> Tensor:
    """conv3x3 (padding 1, no bias) of nearest-2x-upsampled x: (N, Ci, H, W) -> (N, Co, 2H, 2W)."""
    return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)


def up_block(x: Tensor, weight: Tensor, bn: BatchNormArgs, training: bool, upsample: bool = True) -> Tensor:
    """upBlock ([nearest-2x upsample] -> conv3x3 -> BatchNorm2d -> GLU; Block3x3_relu without upsample).

    x: (N, Ci, H, W), weight: (2C, Ci, 3, 3), bn over 2C channels -> (N, C, S*H, S*W), S = 2 if upsample.
    """
    if upsample:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
    return glu(_batch_norm(F.conv2d(x, weight, padding=1), bn, training))


def res_block(x: Tensor, weight1: Tensor, bn1: BatchNormArgs, weight2: Tensor, bn2: BatchNormArgs,
              training: bool) -> Tensor:
    """ResBlock: x + BN2(conv3x3(GLU(BN1(conv3x3(x))))); x (N, C, H, W), weight1 (2C, C, 3, 3),
    weight2 (C, C, 3, 3), bn1 over 2C, bn2 over C -> (N, C, H, W)."""
    y = glu(_batch_norm(F.conv2d(x, weight1, padding=1), bn1, training))
    return _batch_norm(F.conv2d(y, weight2, padding=1), bn2, training) + x


def down_block(x: Tensor, weight: Tensor, bn: Optional[BatchNormArgs], training: bool, stride: int = 2,
               padding: int = 1, negative_slope: float = 0.2, addend: Optional[Tensor] = None) -> Tensor:
    """downBlock / Block3x3_leakRelu / a conv of encode_image_by_16times / jointConv:
    conv(x, weight, stride, padding) [+ addend] [-> BatchNorm2d] -> LeakyReLU(negative_slope).

    x: (N, Ci, H, W), weight: (Co, Ci, K, K) (no bias), addend: (N, Co, Ho, Wo) or None, bn over Co
    channels or None (encode_image_by_16times' first conv) -> (N, Co, Ho, Wo).
    """
    y = F.conv2d(x, weight, stride=stride, padding=padding)
    if addend is not None:
        y = y + addend
    if bn is not None:
        y = _batch_norm(y, bn, training)
    return F.leaky_relu(y, negative_slope)


def tiled_code_conv(code: Tensor, weight: Tensor, size: tuple[int, int], padding: int) -> Tensor:
    """The conv (stride 1, no bias) of ``code`` tiled over a ``size`` map: jointConv's share of the
    sentence code in D_GET_LOGITS. code: (B, E), weight: (Co, E, K, K) -> (B, Co, Ho, Wo)."""
    tiled = code.view(*code.shape, 1, 1).repeat(1, 1, *size)
    return F.conv2d(tiled, weight, padding=padding)


def img_conv_tanh(x: Tensor, weight: Tensor) -> Tensor:
    """GET_IMAGE_G's ``img``: tanh(conv3x3(x, weight)) (padding 1, no bias): (N, Ci, H, W) -> (N, Co, H, W)."""
    return torch.tanh(F.conv2d(x, weight, padding=1))
