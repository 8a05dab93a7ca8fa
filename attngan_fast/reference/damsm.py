"""DAMSM word-level similarities (original ``code/miscc/losses.py``; docs/original_attngan.md §6.1-6.3).

``word_similarities`` is the per-caption Python loop of the original ``words_loss``;
:func:`damsm_word_similarity` gives its result in the form of the fused op
``attngan_fast.ops.damsm_word_similarity`` (the op's reference twin).
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["caption_lengths", "cosine_similarity", "damsm_word_similarity", "func_attention", "word_similarities"]

CapLens = Union[Tensor, Sequence[int]]


def caption_lengths(cap_lens: CapLens) -> list[int]:
    """cap_lens (a (B,) tensor or B numbers) as Python ints (a host sync for a CUDA tensor);
    ValueError naming cap_lens for a length that is not a whole number (2.7 is never truncated to 2)."""
    values = cap_lens.tolist() if isinstance(cap_lens, Tensor) else list(cap_lens)
    for i, n in enumerate(values):
        if isinstance(n, bool) or int(n) != n:
            raise ValueError(f"cap_lens: expected whole numbers, got cap_lens[{i}] = {n!r}")
    return [int(n) for n in values]


def similarity_dtype(dtype: torch.dtype) -> torch.dtype:
    """sim is accumulated and returned in float32 (float64 for float64 inputs)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``sum(x1 * x2) / max(|x1| * |x2|, eps)`` along ``dim``, then ``.squeeze()``.

    The clamp is on the product of the norms (``F.cosine_similarity`` clamps each norm).
    """
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


def func_attention(query: Tensor, context: Tensor, gamma1: float) -> tuple[Tensor, Tensor]:
    """DAMSM attention of each word over the image regions (paper Eq. 7-9).

    query: (B, D, n) words; context: (B, D, ih, iw) regions (S = ih * iw).
    Softmax over words for each region, then softmax over regions of gamma1 * those probabilities.

    Returns the region context per word (B, D, n) and the weights (B, n, ih, iw).
    """
    batch_size, query_len = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    source_len = ih * iw

    context = context.reshape(batch_size, -1, source_len)  # (B, D, S)
    context_t = context.transpose(1, 2).contiguous()  # (B, S, D)
    attn = torch.bmm(context_t, query)  # (B, S, n), Eq. 7
    attn = F.softmax(attn.view(batch_size * source_len, query_len), dim=1)  # Eq. 8, over words
    attn = attn.view(batch_size, source_len, query_len).transpose(1, 2).contiguous()  # (B, n, S)
    attn = attn.view(batch_size * query_len, source_len) * gamma1
    attn = F.softmax(attn, dim=1).view(batch_size, query_len, source_len)  # Eq. 9, over regions
    attn_t = attn.transpose(1, 2).contiguous()  # (B, S, n)
    weighted_context = torch.bmm(context, attn_t)  # (B, D, n)
    return weighted_context, attn.view(batch_size, -1, ih, iw)


def word_similarities(
    img_features: Tensor,
    words_emb: Tensor,
    cap_lens: Sequence[int],
    gamma1: float,
    gamma2: float,
) -> tuple[Tensor, list[Tensor]]:
    """The per-caption loop of the original ``words_loss``: similarities before GAMMA3 and masking.

    img_features: (B, D, ih, iw); words_emb: (B, D, T); cap_lens: B Python ints in 1..T.
    Returns sim (B images, B captions), sim[j, i] = log sum_w exp(gamma2 * cos(e_w, c_w)) over
    caption i's words against image j, and the att maps [(1, cap_lens[i], ih, iw)] of image i
    with caption i.
    """
    batch_size = img_features.size(0)
    att_maps = []
    similarities = []
    for i in range(batch_size):
        words_num = cap_lens[i]
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous()  # (1, D, n)
        word = word.repeat(batch_size, 1, 1)  # (B, D, n)
        weighted_context, attn = func_attention(word, img_features, gamma1)
        att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)  # (B*n, D)
        weighted_context = weighted_context.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        row_sim = cosine_similarity(word, weighted_context).view(batch_size, words_num)  # Eq. 10
        row_sim = torch.log(torch.exp(row_sim * gamma2).sum(dim=1, keepdim=True))  # (B, 1)
        similarities.append(row_sim)
    return torch.cat(similarities, 1), att_maps


def damsm_word_similarity(
    words: Tensor, cap_lens: CapLens, regions: Tensor, gamma1: float, gamma2: float, need_attention: bool = False
) -> tuple[Tensor, Optional[Tensor]]:
    """:func:`word_similarities` with the outputs of ``attngan_fast.ops.damsm_word_similarity``.

    words: (B, D, T); cap_lens: (B,) int tensor or B ints in 1..T; regions: (B, D, H, W).
    Returns sim (B, B) in float32 (float64 for float64 inputs), sim[j, i] = image j vs caption i,
    and with ``need_attention`` attn (B, T, H, W) (caption i on image i, zero at t >= cap_lens[i]),
    else None.
    """
    sim, att_maps = word_similarities(regions, words, caption_lengths(cap_lens), gamma1, gamma2)
    sim = sim.to(similarity_dtype(words.dtype))
    if not need_attention:
        return sim, None
    T = words.shape[2]
    return sim, torch.cat([F.pad(a, (0, 0, 0, 0, 0, T - a.shape[1])) for a in att_maps])
