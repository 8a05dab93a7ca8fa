"""Word-region attention (original ``code/GlobalAttention.py``, paper Eq. 2; docs/original_attngan.md §4.3).

Two masking modes:

* ``"per_sample"``: each pixel attends over the words of its own caption only.
* ``"original"``: the original's ``mask.repeat(Q, 1)`` against batch-major rows, so row
  ``b*Q + q`` gets the mask of sample ``(b*Q + q) % B`` (taoxugit/AttnGAN#93). Needed to
  reproduce the released checkpoints exactly. Equal to ``"per_sample"`` when ``B == 1`` or all
  masks are equal.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MASK_MODES", "word_region_attention"]

MASK_MODES = ("per_sample", "original")


def _softmax_dim1(x: Tensor) -> Tensor:
    return F.softmax(x, dim=1)


def word_region_attention(
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
    and no NaN anywhere. "per_sample" never reads a masked word (a NaN there cannot matter, as
    in the fused op); "original" mode keeps the original's behaviour, NaN included.
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode: expected one of {MASK_MODES}, got {mask_mode!r}")
    softmax = _softmax_dim1 if softmax is None else softmax
    B, C, H, W = h.shape
    Q = H * W
    T = words.size(2)
    query = h.reshape(B, C, Q).transpose(1, 2)  # (B, Q, C)
    if mask is not None and mask_mode == "per_sample":
        words = words.masked_fill(mask.bool().unsqueeze(1), 0.0)  # masked words are never read
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
