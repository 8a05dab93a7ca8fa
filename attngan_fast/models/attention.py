"""Word-context attention of the generator (original ``code/GlobalAttention.py``, paper Eq. 2).

Two masking modes:

* ``"per_sample"`` (default): each pixel attends over the words of its own caption only.
* ``"original"``: the original's ``mask.repeat(Q, 1)`` against batch-major rows, so row
  ``b*Q + q`` gets the mask of sample ``(b*Q + q) % B`` (taoxugit/AttnGAN#93). Needed to
  reproduce the released checkpoints exactly. Equal to ``"per_sample"`` when ``B == 1`` or all
  masks are equal.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .. import ops  # attngan_fast.ops imports this module for the reference: use ops.* only at call time
from ..ops._dispatch import use_fast
from .blocks import check_shape, conv1x1

__all__ = ["MASK_MODES", "GlobalAttentionGeneral", "word_region_attention_reference"]

MASK_MODES = ("per_sample", "original")


def _softmax_dim1(x: Tensor) -> Tensor:
    return F.softmax(x, dim=1)


def word_region_attention_reference(
    h: Tensor,
    words: Tensor,
    mask: Optional[Tensor] = None,
    mask_mode: str = "per_sample",
    *,
    softmax: Optional[Callable[[Tensor], Tensor]] = None,
) -> tuple[Tensor, Tensor]:
    """Attention of every pixel over the (already projected) words; softmax over words.

    h: (B, C, H, W) queries (pixels, Q = H*W, row-major).
    words: (B, C, T) word vectors after ``conv_context``; keys and values at once.
    mask: (B, T) bool (uint8 accepted), True = padded word; or None.
    mask_mode: "per_sample" or "original" (see the module docstring).
    softmax: applied to the (B*Q, T) logits; default softmax over dim 1 (the module passes its ``sm``).

    Returns context (B, C, H, W) = words @ weights, and weights (B, T, H, W).

    All-masked rule ("per_sample"): for a sample whose words are all masked, the weights are 0
    for every word and its context is 0 (the original gives NaN there), with zero gradients
    and no NaN anywhere. "original" mode keeps the original's behaviour, NaN included.
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode: expected one of {MASK_MODES}, got {mask_mode!r}")
    sizes: dict[str, int] = {}
    check_shape("h", h, ("B", "C", "H", "W"), sizes)
    check_shape("words", words, ("B", "C", "T"), sizes)
    if mask is not None:
        check_shape("mask", mask, ("B", "T"), sizes)
    softmax = _softmax_dim1 if softmax is None else softmax
    B, C, H, W = h.shape
    Q = H * W
    T = words.size(2)
    query = h.reshape(B, C, Q).transpose(1, 2)  # (B, Q, C)
    logits = torch.bmm(query, words).reshape(B * Q, T)  # (B*Q, T), row b*Q + q
    all_masked: Optional[Tensor] = None
    if mask is not None:
        mask = mask.bool()
        if mask_mode == "original":
            logits = logits.masked_fill(mask.repeat(Q, 1), float("-inf"))
        else:
            all_masked = mask.all(dim=1)  # (B,)
            row_mask = mask & ~all_masked.unsqueeze(1)  # unmask fully masked samples, zeroed below
            logits = logits.reshape(B, Q, T).masked_fill(row_mask.unsqueeze(1), float("-inf"))
            logits = logits.reshape(B * Q, T)
    weights = softmax(logits).reshape(B, Q, T)
    if all_masked is not None:
        weights = weights.masked_fill(all_masked.view(B, 1, 1), 0.0)
    weights = weights.transpose(1, 2).contiguous()  # (B, T, Q)
    context = torch.bmm(words, weights)  # (B, C, Q)
    return context.reshape(B, C, H, W), weights.reshape(B, T, H, W)


class GlobalAttentionGeneral(nn.Module):
    """Word-context attention: ``conv_context`` (1x1, cdf -> idf, no bias) then
    :func:`word_region_attention_reference`, or, with the "fast" backend and ``mask_mode="per_sample"``,
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
        words = self.conv_context(context.unsqueeze(3)).squeeze(3)  # (B, idf, T)
        if self.mask_mode == "per_sample" and use_fast("word_region_attention", input):
            context, weights = ops.word_region_attention(input, words, self.mask, need_weights=True)
            return context, weights
        return word_region_attention_reference(input, words, self.mask, self.mask_mode, softmax=self.sm)

    def extra_repr(self) -> str:
        return f"mask_mode={self.mask_mode!r}"
