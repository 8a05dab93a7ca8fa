"""AttnGAN discriminators (original ``code/model.py``), checkpoint compatible.

``forward(x)`` returns only the image features (B, 8*ndf, 4, 4); the heads ``UNCOND_DNET`` (absent,
i.e. None, when ``b_jcu=False``) and ``COND_DNET`` are called separately and return
**probabilities** (sigmoid applied), shape (B,).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..backend import get_backend
from ..ops.dispatch import use_kernel
from ..ops.down_blocks import tiled_code_conv
from .blocks import Block3x3_leakRelu, downBlock, encode_image_by_16times, leaky_conv_groups, run_down_block

__all__ = ["D_GET_LOGITS", "D_NET64", "D_NET128", "D_NET256"]


class D_GET_LOGITS(nn.Module):
    """Discriminator head: [``jointConv`` on cat(h, sentence embedding tiled 4x4)] ->
    ``outlogits`` [Conv2d(8ndf -> 1, k4 s4, bias), Sigmoid].

    Fast backend: jointConv is one ``down_block`` op on h, with the tiled code's share added before
    its BatchNorm as a per-position term (:func:`attngan_fast.ops.down_blocks.tiled_code_conv`:
    exact algebra, no tiled tensor, no concatenation) where the kernel takes the shape; outlogits,
    whose kernel covers the 4x4 map, is one matrix product."""

    def __init__(self, ndf: int, nef: int, bcondition: bool = False) -> None:
        super().__init__()
        self.df_dim = ndf
        self.ef_dim = nef
        self.bcondition = bcondition
        if bcondition:
            self.jointConv = Block3x3_leakRelu(ndf * 8 + nef, ndf * 8)
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    @classmethod
    def from_modules(cls, ndf: int, nef: int, outlogits: nn.Module,
                     jointConv: Optional[nn.Module] = None) -> "D_GET_LOGITS":
        """The head around existing children (shared, not copied); conditional when jointConv is given."""
        head = cls.__new__(cls)
        nn.Module.__init__(head)
        head.df_dim, head.ef_dim, head.bcondition = ndf, nef, jointConv is not None
        if jointConv is not None:
            head.jointConv = jointConv
        head.outlogits = outlogits
        return head

    def forward(self, h_code: Tensor, c_code: Optional[Tensor] = None) -> Tensor:
        """h_code: (B, 8ndf, 4, 4); c_code: (B, nef) sentence embedding (conditional head only).

        Returns probabilities (B,).
        """
        fast = get_backend() == "fast"
        if self.bcondition and c_code is not None:
            groups = leaky_conv_groups(self.jointConv) if fast else None
            if groups is not None and len(groups) == 1 and self._fusable_joint_conv(h_code, groups[0][0]):
                h_code = self._joint_conv_fast(h_code, c_code, *groups[0])
            else:
                c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 4, 4)
                h_code = self.jointConv(torch.cat((h_code, c_code), 1))
        if fast and self._logits_are_a_product(h_code):
            conv = self.outlogits[0]
            return torch.sigmoid(F.linear(h_code.flatten(1), conv.weight.flatten(1), conv.bias)).view(-1)
        return self.outlogits(h_code).view(-1)

    def _fusable_joint_conv(self, h_code: Tensor, conv: nn.Conv2d) -> bool:
        """A stride-1 conv over h's channels + the code's, of a shape the fused kernel takes."""
        ch = h_code.shape[1]
        return (conv.stride == (1, 1) and conv.weight.shape[1] == ch + self.ef_dim
                and use_kernel("down_block", h_code, conv.weight[:, :ch], 1, conv.padding[0]))

    def _logits_are_a_product(self, h_code: Tensor) -> bool:
        """outlogits is [Conv2d(C, 1) whose kernel is h's whole map, Sigmoid]: one output per image."""
        mods = list(self.outlogits)
        conv = mods[0] if len(mods) == 2 and isinstance(mods[1], nn.Sigmoid) else None
        return (type(conv) is nn.Conv2d and h_code.dim() == 4 and conv.padding == (0, 0) and conv.groups == 1
                and conv.dilation == (1, 1) and tuple(conv.weight.shape[1:]) == tuple(h_code.shape[1:]))

    def _joint_conv_fast(self, h_code: Tensor, c_code: Tensor, conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d],
                         slope: float) -> Tensor:
        """jointConv(cat(h, tiled c)): the op on h alone plus c's share, a per-position term."""
        ch = h_code.shape[1]
        weight_h, weight_c = conv.weight.split([ch, self.ef_dim], 1)
        code = tiled_code_conv(c_code.reshape(-1, self.ef_dim).to(weight_c.dtype), weight_c, tuple(h_code.shape[2:]),
                               conv.padding[0])
        return run_down_block(conv, bn, slope, h_code, addend=code, weight=weight_h)


class _DNet(nn.Module):
    """Common heads: ``UNCOND_DNET`` (or None without b_jcu) and ``COND_DNET``, registered
    after the image encoder of the subclass, as in the original."""

    def _add_heads(self, cfg: Any, b_jcu: bool) -> None:
        ndf, nef = cfg.GAN.DF_DIM, cfg.TEXT.EMBEDDING_DIM
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True)


class D_NET64(_DNet):
    """64 px: ``img_code_s16``. x (B, 3, 64, 64) -> (B, 8ndf, 4, 4)."""

    def __init__(self, cfg: Any, b_jcu: bool = True) -> None:
        super().__init__()
        ndf = cfg.GAN.DF_DIM
        self.img_code_s16 = encode_image_by_16times(ndf)
        self._add_heads(cfg, b_jcu)

    def forward(self, x_var: Tensor) -> Tensor:
        return self.img_code_s16(x_var)


class D_NET128(_DNet):
    """128 px: ``img_code_s16`` -> ``img_code_s32`` -> ``img_code_s32_1``.
    x (B, 3, 128, 128) -> (B, 8ndf, 4, 4)."""

    def __init__(self, cfg: Any, b_jcu: bool = True) -> None:
        super().__init__()
        ndf = cfg.GAN.DF_DIM
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s32_1 = Block3x3_leakRelu(ndf * 16, ndf * 8)
        self._add_heads(cfg, b_jcu)

    def forward(self, x_var: Tensor) -> Tensor:
        x = self.img_code_s16(x_var)
        x = self.img_code_s32(x)
        return self.img_code_s32_1(x)


class D_NET256(_DNet):
    """256 px: ``img_code_s16`` -> ``img_code_s32`` -> ``img_code_s64`` -> ``img_code_s64_1``
    -> ``img_code_s64_2``. x (B, 3, 256, 256) -> (B, 8ndf, 4, 4)."""

    def __init__(self, cfg: Any, b_jcu: bool = True) -> None:
        super().__init__()
        ndf = cfg.GAN.DF_DIM
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s64 = downBlock(ndf * 16, ndf * 32)
        self.img_code_s64_1 = Block3x3_leakRelu(ndf * 32, ndf * 16)
        self.img_code_s64_2 = Block3x3_leakRelu(ndf * 16, ndf * 8)
        self._add_heads(cfg, b_jcu)

    def forward(self, x_var: Tensor) -> Tensor:
        x = self.img_code_s16(x_var)
        x = self.img_code_s32(x)
        x = self.img_code_s64(x)
        x = self.img_code_s64_1(x)
        return self.img_code_s64_2(x)
