"""AttnGAN building blocks (original ``code/model.py``), plain PyTorch.

Module classes, attribute names and ``nn.Sequential`` indices are those of the original, so the
state_dict keys of every model built from these blocks match the released checkpoints.

``upBlock`` and ``Block3x3_relu`` return small ``nn.Sequential`` subclasses (:class:`UpBlock`,
:class:`Block3x3Relu`) whose ``forward``, like :class:`ResBlock`'s, runs the fused op of
:mod:`attngan_fast.ops.blocks` with the "fast" backend (same parameters, buffers and state_dict
keys; BatchNorm's running statistics updated in place as BatchNorm2d does) and the plain
modules otherwise, or for a configuration the fused ops do not cover. Likewise the
discriminator's ``downBlock``, ``Block3x3_leakRelu`` and ``encode_image_by_16times``
(:class:`DownBlock`, :class:`Block3x3LeakRelu`, :class:`ImageEncoder16`) with
:func:`attngan_fast.ops.down_blocks.down_block`.
"""
from __future__ import annotations

from typing import Optional

import torch.nn as nn
from torch import Tensor

from .. import reference
from ..backend import get_backend
from ..ops.blocks import batch_norm_args, count_batch, res_block, up_block, uses_batch_stats
from ..ops.checks import check_shape
from ..ops.dispatch import use_kernel
from ..ops.down_blocks import down_block

__all__ = [
    "GLU",
    "UpBlock",
    "Block3x3Relu",
    "ResBlock",
    "Block3x3LeakRelu",
    "DownBlock",
    "ImageEncoder16",
    "conv1x1",
    "conv3x3",
    "upBlock",
    "Block3x3_relu",
    "Block3x3_leakRelu",
    "downBlock",
    "encode_image_by_16times",
    "check_shape",
    "fusable_conv_bn",
    "is_nearest_2x",
    "leaky_conv_groups",
    "run_down_block",
]


class GLU(nn.Module):
    """Gated linear unit over channels: ``a * sigmoid(b)`` with ``a, b`` the two halves of dim 1.

    x: (N, 2k, ...) -> (N, k, ...). Equal to ``F.glu(x, dim=1)``: :func:`attngan_fast.reference.glu`.
    """

    def forward(self, x: Tensor) -> Tensor:
        return reference.glu(x)


def conv1x1(in_planes: int, out_planes: int, bias: bool = False) -> nn.Conv2d:
    """1x1 convolution, stride 1, no padding, no bias by default."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=1, padding=0, bias=bias)


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def fusable_conv_bn(conv: nn.Module, bn: nn.Module) -> bool:
    """conv3x3 (stride 1, padding 1, no bias) then an affine BatchNorm2d: what the fused ops compute."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.bias is None
        and conv.padding_mode == "zeros"
        and isinstance(bn, nn.BatchNorm2d)
        and bn.affine
    )


def is_nearest_2x(up: nn.Module) -> bool:
    """A nearest-neighbour 2x ``nn.Upsample`` (by scale factor): what ``up_block(upsample=True)`` computes."""
    return (isinstance(up, nn.Upsample) and up.mode == "nearest" and up.size is None
            and up.scale_factor in (2.0, (2.0, 2.0)))


class _FusedSequential(nn.Sequential):
    """An ``nn.Sequential`` of the original children that a fused op may compute in one call."""

    @classmethod
    def from_modules(cls, *modules: nn.Module) -> "_FusedSequential":
        """The block around existing children (shared, not copied)."""
        block = cls.__new__(cls)
        nn.Sequential.__init__(block, *modules)
        return block


class _ConvBnGlu(_FusedSequential):
    """[nearest 2x upsample] -> conv3x3 -> BatchNorm2d -> GLU; the fused ``up_block`` op with the
    "fast" backend, the children otherwise (or when they are not what the op computes)."""

    upsample = False

    def forward(self, x: Tensor) -> Tensor:
        k = 1 if self.upsample else 0  # index of the conv
        if (
            len(self) == 3 + k
            and (not self.upsample or is_nearest_2x(self[0]))
            and fusable_conv_bn(self[k], self[k + 1])
            and isinstance(self[k + 2], GLU)
            and use_kernel("up_block", x)
        ):
            bn = self[k + 1]
            out = up_block(x, self[k].weight, batch_norm_args(bn), uses_batch_stats(bn), upsample=self.upsample)
            count_batch(bn)
            return out
        return super().forward(x)


class UpBlock(_ConvBnGlu):
    """Nearest x2 upsample -> conv3x3(in, 2*out) -> BatchNorm2d(2*out) -> GLU.

    x: (N, in_planes, H, W) -> (N, out_planes, 2H, 2W). Children 0..3 as in the original.
    Fast backend: :func:`attngan_fast.ops.up_block` (phase-decomposed conv, fused BN + GLU).
    """

    upsample = True

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(
            nn.Upsample(scale_factor=2, mode="nearest"),
            conv3x3(in_planes, out_planes * 2),
            nn.BatchNorm2d(out_planes * 2),
            GLU(),
        )


class Block3x3Relu(_ConvBnGlu):
    """conv3x3(in, 2*out) -> BatchNorm2d(2*out) -> GLU. x: (N, in, H, W) -> (N, out, H, W).

    Fast backend: :func:`attngan_fast.ops.up_block` with ``upsample=False``.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(
            conv3x3(in_planes, out_planes * 2),
            nn.BatchNorm2d(out_planes * 2),
            GLU(),
        )


def upBlock(in_planes: int, out_planes: int) -> UpBlock:
    """The original ``upBlock``: (N, in, H, W) -> (N, out, 2H, 2W)."""
    return UpBlock(in_planes, out_planes)


def Block3x3_relu(in_planes: int, out_planes: int) -> Block3x3Relu:
    """The original ``Block3x3_relu`` (unused by AttnGAN): (N, in, H, W) -> (N, out, H, W)."""
    return Block3x3Relu(in_planes, out_planes)


class ResBlock(nn.Module):
    """``x + BN(conv3x3(GLU(BN(conv3x3(x)))))``; no activation after the sum.

    x: (N, C, H, W) -> (N, C, H, W). ``block`` children: 0 conv(C->2C), 1 BN, 2 GLU, 3 conv(C->C), 4 BN.
    Fast backend: :func:`attngan_fast.ops.res_block`.
    """

    def __init__(self, channel_num: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channel_num, channel_num * 2),
            nn.BatchNorm2d(channel_num * 2),
            GLU(),
            conv3x3(channel_num, channel_num),
            nn.BatchNorm2d(channel_num),
        )

    @classmethod
    def from_block(cls, block: nn.Sequential) -> "ResBlock":
        """A ResBlock around an existing ``block`` Sequential (shared, not copied)."""
        res = cls.__new__(cls)
        nn.Module.__init__(res)
        res.block = block
        return res

    def forward(self, x: Tensor) -> Tensor:
        b = self.block
        if (
            len(b) == 5
            and fusable_conv_bn(b[0], b[1])
            and isinstance(b[2], GLU)
            and fusable_conv_bn(b[3], b[4])
            and uses_batch_stats(b[1]) == uses_batch_stats(b[4])
            and use_kernel("res_block", x)
        ):
            training = uses_batch_stats(b[1])
            out = res_block(x, b[0].weight, batch_norm_args(b[1]), b[3].weight, batch_norm_args(b[4]), training)
            count_batch(b[1])
            count_batch(b[4])
            return out
        return self.block(x) + x


def _fusable_down_conv(conv: nn.Module) -> bool:
    """A square-kernel Conv2d without bias, dilation or groups, one stride and one padding: the conv
    of the fused ``down_block`` op."""
    return (
        type(conv) is nn.Conv2d
        and conv.kernel_size[0] == conv.kernel_size[1]
        and conv.stride[0] == conv.stride[1]
        and isinstance(conv.padding, tuple)
        and conv.padding[0] == conv.padding[1]
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.bias is None
        and conv.padding_mode == "zeros"
    )


def leaky_conv_groups(seq: nn.Sequential) -> Optional[list[tuple[nn.Conv2d, Optional[nn.BatchNorm2d], float]]]:
    """``seq`` as runs of [conv, BatchNorm2d, LeakyReLU] / [conv, LeakyReLU] that the fused
    ``down_block`` op computes: (conv, bn or None, negative slope) per run, or None."""
    groups, mods, i = [], list(seq), 0
    while i < len(mods):
        conv = mods[i]
        bn = mods[i + 1] if i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm2d) else None
        j = i + (2 if bn is not None else 1)
        if (not _fusable_down_conv(conv) or (bn is not None and not bn.affine) or j >= len(mods)
                or not isinstance(mods[j], nn.LeakyReLU) or not mods[j].negative_slope > 0):
            return None
        groups.append((conv, bn, mods[j].negative_slope))
        i = j + 1
    return groups or None


def run_down_block(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d], slope: float, x: Tensor,
                   addend: Optional[Tensor] = None, weight: Optional[Tensor] = None) -> Tensor:
    """One [conv, BN, LeakyReLU] run through :func:`attngan_fast.ops.down_blocks.down_block` with
    BatchNorm2d's bookkeeping (``weight`` overrides ``conv.weight``, e.g. a slice of it)."""
    bn_args, training = (batch_norm_args(bn), uses_batch_stats(bn)) if bn is not None else (None, False)
    out = down_block(x, conv.weight if weight is None else weight, bn_args, training, conv.stride[0],
                     conv.padding[0], slope, addend)
    if bn is not None:
        count_batch(bn)
    return out


class _ConvBnLeaky(_FusedSequential):
    """Runs of conv [-> BatchNorm2d] -> LeakyReLU; with the "fast" backend each run whose shape the
    fused kernel takes is one ``down_block`` op, the others run their children (as do all runs when
    they are not what the op computes)."""

    def forward(self, x: Tensor) -> Tensor:
        groups = leaky_conv_groups(self) if get_backend() == "fast" else None
        if groups is None:
            return super().forward(x)
        for conv, bn, slope in groups:
            if use_kernel("down_block", x, conv.weight, conv.stride[0], conv.padding[0]):
                x = run_down_block(conv, bn, slope, x)
            else:
                x = self._run_children(conv, bn, x)
        return x

    def _run_children(self, conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d], x: Tensor) -> Tensor:
        """The run [conv, (bn,) LeakyReLU] starting at ``conv`` through its own modules."""
        start = next(i for i, m in enumerate(self) if m is conv)
        for m in list(self)[start:start + (3 if bn is not None else 2)]:
            x = m(x)
        return x


class Block3x3LeakRelu(_ConvBnLeaky):
    """conv3x3 -> BatchNorm2d -> LeakyReLU(0.2). x: (N, in, H, W) -> (N, out, H, W).

    Fast backend: :func:`attngan_fast.ops.down_blocks.down_block` (3x3, stride 1, padding 1).
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2, inplace=True))


class DownBlock(_ConvBnLeaky):
    """conv 4x4 stride 2 pad 1 (no bias) -> BatchNorm2d -> LeakyReLU(0.2).

    x: (N, in, H, W) -> (N, out, H/2, W/2). Fast backend: one ``down_block`` op.
    """

    def __init__(self, in_planes: int, out_planes: int) -> None:
        super().__init__(
            nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False),
            nn.BatchNorm2d(out_planes),
            nn.LeakyReLU(0.2, inplace=True),
        )


class ImageEncoder16(_ConvBnLeaky):
    """Four stride-2 4x4 convs: x (N, 3, S, S) -> (N, 8*ndf, S/16, S/16).

    Indices: convs 0, 2, 5, 8; BatchNorms 3, 6, 9 (none after the first conv); LeakyReLU(0.2)
    at 1, 4, 7, 10. Fast backend: four ``down_block`` ops (the first without BatchNorm).
    """

    def __init__(self, ndf: int) -> None:
        super().__init__(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
        )


def Block3x3_leakRelu(in_planes: int, out_planes: int) -> Block3x3LeakRelu:
    """The original ``Block3x3_leakRelu``: conv3x3 -> BN -> LeakyReLU(0.2), (N, in, H, W) -> (N, out, H, W)."""
    return Block3x3LeakRelu(in_planes, out_planes)


def downBlock(in_planes: int, out_planes: int) -> DownBlock:
    """The original ``downBlock``: (N, in, H, W) -> (N, out, H/2, W/2)."""
    return DownBlock(in_planes, out_planes)


def encode_image_by_16times(ndf: int) -> ImageEncoder16:
    """The original ``encode_image_by_16times``: x (N, 3, S, S) -> (N, 8*ndf, S/16, S/16)."""
    return ImageEncoder16(ndf)
