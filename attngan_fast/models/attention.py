"""Word-context attention of the generator (original ``code/GlobalAttention.py``, paper Eq. 2;
docs/original_attngan.md §4.3), with the masking modes of :mod:`attngan_fast.reference.attention`:
``"per_sample"`` (default; each pixel attends over its own caption's words) or ``"original"`` (the
original's batch-mixing mask, needed to reproduce the released checkpoints exactly).
"""
from __future__ import annotations

from typing import Optional

import torch.nn as nn
from torch import Tensor

from .. import ops, reference
from ..ops.checks import check_shape
from ..ops.dispatch import use_kernel
from ..reference.attention import MASK_MODES
from .blocks import conv1x1

__all__ = ["MASK_MODES", "GlobalAttentionGeneral", "word_region_attention_reference"]

word_region_attention_reference = reference.word_region_attention  # the name before reference/ existed


class GlobalAttentionGeneral(nn.Module):
    """Word-context attention: ``conv_context`` (1x1, cdf -> idf, no bias) then
    :func:`attngan_fast.reference.word_region_attention`, or, with the "fast" backend and ``mask_mode="per_sample"``,
    the fused op :func:`attngan_fast.ops.word_region_attention` (same result; ``sm`` is then not called).

    The mask is set beforehand with :meth:`applyMask` (attribute ``mask``), as in the original.
    ``sm`` is the original ``nn.Softmax`` (dim 1 of the (B*Q, T) logits), kept so that hooks and
    traces on ``att.sm`` see what they saw in the original.
    """

    def __init__(self, idf: int, cdf: int, mask_mode: str = "per_sample") -> None:
        super().__init__()
        if mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode: expected one of {MASK_MODES}, got {mask_mode!r}")
        self.idf = idf
        self.cdf = cdf
        self.mask_mode = mask_mode
        self.conv_context = conv1x1(cdf, idf)
        self.sm = nn.Softmax(dim=1)
        self.mask: Optional[Tensor] = None

    @classmethod
    def from_modules(cls, conv_context: nn.Conv2d, sm: nn.Module, mask_mode: str = "per_sample") -> "GlobalAttentionGeneral":
        """An attention around an existing 1x1 ``conv_context`` (cdf -> idf) and ``sm`` (shared)."""
        att = cls(conv_context.out_channels, conv_context.in_channels, mask_mode)
        att.conv_context, att.sm = conv_context, sm
        return att

    def applyMask(self, mask: Optional[Tensor]) -> None:
        """mask: (B, T) bool, True = padded word; or None."""
        self.mask = mask

    def forward(self, input: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """input: (B, idf, H, W); context: (B, cdf, T) words.

        Returns weighted context (B, idf, H, W) and attention weights (B, T, H, W).
        """
        sizes: dict[str, int] = {}
        check_shape("input", input, ("B", self.idf, "H", "W"), sizes)
        check_shape("context", context, ("B", self.cdf, "T"), sizes)
        if self.mask is not None:
            check_shape("mask", self.mask, ("B", "T"), sizes)
        words = self.conv_context(context.unsqueeze(3)).squeeze(3)  # (B, idf, T)
        if self.mask_mode == "per_sample" and use_kernel("word_region_attention", input, words, self.mask):
            context, weights = ops.word_region_attention(input, words, self.mask, need_weights=True)
            return context, weights
        return reference.word_region_attention(input, words, self.mask, self.mask_mode, softmax=self.sm)

    def extra_repr(self) -> str:
        return f"mask_mode={self.mask_mode!r}"
