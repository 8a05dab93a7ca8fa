"""DAMSM word-level similarity of every (image, caption) pair of a batch as one custom op.

``sim[j, i]`` scores image j against caption i (docs/original_attngan.md §6.1-6.3): for each of
caption i's words, softmax over the words per region, softmax over the regions of ``gamma1`` times
that, the attended region context, its cosine with the word, then log-sum-exp of ``gamma2`` times
the cosines over the caption's words. The fused kernels (C++ on CPU, Triton on CUDA) never build
the B x B x T x N attention tensors and recompute the attention in the backward. Semantics:
:func:`attngan_fast.reference.damsm_word_similarity`.

Kernels: CPU -> C++ (``csrc/cpu/damsm.cpp``, any size and floating dtype); CUDA -> Triton
(``attngan_fast.kernels.damsm``: T <= ``MAX_T``, D <= ``MAX_D``, no float64). Other inputs run
the reference (:mod:`attngan_fast.ops.dispatch`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .._extension import has_extension
from ..reference.damsm import CapLens, caption_lengths, similarity_dtype
from .checks import check_float_tensor, check_like
from .dispatch import Limit, register_kernels, register_triton, second_order_backward, use_kernel

__all__ = ["CapLens", "check_damsm_word_similarity_inputs", "damsm_word_similarity", "triton_limits"]

_OP = "damsm_word_similarity"


def check_damsm_word_similarity_inputs(words: Tensor, cap_lens: CapLens, regions: Tensor) -> Tensor:
    """Validate the inputs; return cap_lens as an int tensor (B,) on words' device.

    Raises TypeError for a non-float ``words``/``regions`` or mismatched dtypes, ValueError naming
    the argument for wrong shapes, devices, cap_lens dtype or (when given as Python ints) values.
    Tensor cap_lens values are checked by the kernel (CPU) or an asynchronous device assert (CUDA).
    """
    check_float_tensor("words", words, "(B, D, T)")
    if words.dim() != 3 or 0 in words.shape:
        raise ValueError(f"words: expected a non-empty (B, D, T), got {tuple(words.shape)}")
    B, D, T = words.shape
    check_float_tensor("regions", regions, "(B, D, H, W)")
    if regions.dim() != 4 or regions.shape[:2] != (B, D) or 0 in regions.shape:
        raise ValueError(f"regions: expected (B={B}, D={D}, H, W), got {tuple(regions.shape)}")
    check_like("regions", regions, "words", words)
    if isinstance(cap_lens, Tensor):
        if cap_lens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"cap_lens: expected an int32 or int64 tensor, got {cap_lens.dtype}")
        if cap_lens.shape != (B,):
            raise ValueError(f"cap_lens: expected ({B},), got {tuple(cap_lens.shape)}")
        return cap_lens.to(words.device, non_blocking=True)
    lens = caption_lengths(cap_lens)
    if len(lens) != B:
        raise ValueError(f"cap_lens: expected {B} lengths, got {len(lens)}")
    bad = [(i, n) for i, n in enumerate(lens) if not 1 <= n <= T]
    if bad:
        raise ValueError(f"cap_lens: expected values in [1, T={T}], got cap_lens[{bad[0][0]}] = {bad[0][1]}")
    return torch.tensor(lens, dtype=torch.int64).to(words.device, non_blocking=True)  # no stream sync on CUDA


def damsm_word_similarity(
    words: Tensor,
    cap_lens: CapLens,
    regions: Tensor,
    gamma1: float,
    gamma2: float,
    need_attention: bool = False,
) -> tuple[Tensor, Optional[Tensor]]:
    """Similarity of every image with every caption.

    words: (B, D, T) word features (only t < cap_lens[i] is read); cap_lens: (B,) int tensor or
    B ints, each in [1, T]; regions: (B, D, H, W) region features; float32/float16/bfloat16/float64.

    Returns ``sim`` (B, B), float32 (float64 for float64 inputs), ``sim[j, i]`` = image j vs
    caption i, differentiable w.r.t. words and regions; and, with ``need_attention``, ``attn``
    (B, T, H, W) in words' dtype: caption i's attention over image i's regions (what
    ``words_loss`` returns as att maps; zero at t >= cap_lens[i]; no gradient), else None.
    """
    lens = check_damsm_word_similarity_inputs(words, cap_lens, regions)
    if not use_kernel(_OP, words, lens, regions):
        return reference.damsm_word_similarity(words, cap_lens, regions, gamma1, gamma2, need_attention)
    if lens.device.type == "cuda":
        T = words.shape[2]
        torch._assert_async(((lens >= 1) & (lens <= T)).all(), f"cap_lens: expected values in [1, T={T}]")
    sim, attn = torch.ops.attngan_fast.damsm_word_similarity(
        words, lens, regions, float(gamma1), float(gamma2), bool(need_attention)
    )
    return sim, attn if need_attention else None


# ---- fake, autograd and per-device kernels --------------------------------------------------------


def _damsm_word_similarity_fake(words: Tensor, cap_lens: Tensor, regions: Tensor, gamma1: float, gamma2: float,
                                need_attention: bool) -> tuple[Tensor, Tensor]:
    B, _, T = words.shape
    H, W = regions.shape[2:]
    sim = words.new_empty((B, B), dtype=similarity_dtype(words.dtype))
    return sim, words.new_empty((B if need_attention else 0, T, H, W))


def _damsm_word_similarity_backward_fake(grad_sim: Tensor, words: Tensor, cap_lens: Tensor, regions: Tensor,
                                         gamma1: float, gamma2: float) -> tuple[Tensor, Tensor]:
    return (torch.empty_like(words, memory_format=torch.contiguous_format),
            torch.empty_like(regions, memory_format=torch.contiguous_format))


def _damsm_word_similarity_setup_context(ctx, inputs, output) -> None:
    words, cap_lens, regions, gamma1, gamma2, _ = inputs
    ctx.save_for_backward(words, cap_lens, regions)
    ctx.gammas = (gamma1, gamma2)
    ctx.mark_non_differentiable(output[1])


def _damsm_word_similarity_backward(ctx, grad_sim: Tensor, grad_attn: Tensor):
    words, cap_lens, regions = ctx.saved_tensors
    if torch.is_grad_enabled():  # a second derivative is asked for: the reference's
        gamma1, gamma2 = ctx.gammas
        grad_words, _, grad_regions = second_order_backward(
            lambda w, n, r: reference.damsm_word_similarity(w, n, r, gamma1, gamma2, False)[0],
            (words, cap_lens, regions), (grad_sim,), ctx.needs_input_grad[:3])
        return grad_words, None, grad_regions, None, None, None
    grad_words, grad_regions = torch.ops.attngan_fast.damsm_word_similarity_backward(
        grad_sim, words, cap_lens, regions, *ctx.gammas
    )
    return grad_words, None, grad_regions, None, None, None


def triton_limits() -> list[Limit]:
    """The inputs the Triton kernels cannot take (imports Triton): T > ``MAX_T``, D > ``MAX_D``, float64."""
    from ..kernels.damsm import DTYPES, MAX_D, MAX_T

    return [
        Limit(f"at most {MAX_T} word slots (T <= {MAX_T})", lambda words, lens, regions: words.shape[2] <= MAX_T),
        Limit(f"at most {MAX_D} features (D <= {MAX_D})", lambda words, lens, regions: words.shape[1] <= MAX_D),
        Limit("float32, float16 or bfloat16 (float64 has no tl.dot path)",
              lambda words, lens, regions: words.dtype in DTYPES),
    ]


def _register_triton_kernels() -> list[Limit]:
    """The Triton kernels for CUDA tensors (imports Triton); returns their limits."""
    from ..kernels import damsm as triton_damsm

    torch.library.register_kernel(f"attngan_fast::{_OP}", "cuda", triton_damsm.damsm_word_similarity_forward)
    torch.library.register_kernel(f"attngan_fast::{_OP}_backward", "cuda", triton_damsm.damsm_word_similarity_backward)
    return triton_limits()


if has_extension():
    torch.library.register_fake(f"attngan_fast::{_OP}", _damsm_word_similarity_fake)
    torch.library.register_fake(f"attngan_fast::{_OP}_backward", _damsm_word_similarity_backward_fake)
    torch.library.register_autograd(f"attngan_fast::{_OP}", _damsm_word_similarity_backward,
                                    setup_context=_damsm_word_similarity_setup_context)
    register_kernels(_OP, ["cpu"])  # csrc/cpu/damsm.cpp, registered by _C
    register_triton(_OP, _register_triton_kernels)
