"""DAMSM word-level similarity of every (image, caption) pair of a batch as one custom op.

``sim[j, i]`` scores image j against caption i (spec §6.1-6.3): for each of caption i's words,
softmax over the words per region, softmax over the regions of ``gamma1`` times that, the
attended region context, its cosine with the word, then log-sum-exp of ``gamma2`` times the
cosines over the caption's words. The fused kernels (C++ on CPU, Triton on CUDA) never build
the B x B x T x N attention tensors and recompute the attention in the backward.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from .._extension import has_extension
from ._dispatch import register_devices, use_fast

CapLens = Union[Tensor, Sequence[int]]


def _sim_dtype(dtype: torch.dtype) -> torch.dtype:
    """sim is accumulated and returned in float32 (float64 for float64 inputs)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def cap_lens_list(cap_lens: CapLens) -> list[int]:
    """cap_lens (a tensor or a sequence of numbers) as Python ints; ValueError naming cap_lens for
    a length that is not a whole number (2.7 is never truncated to 2)."""
    values = cap_lens.tolist() if isinstance(cap_lens, Tensor) else list(cap_lens)
    for i, n in enumerate(values):
        if isinstance(n, bool) or int(n) != n:
            raise ValueError(f"cap_lens: expected whole numbers, got cap_lens[{i}] = {n!r}")
    return [int(n) for n in values]


def check_damsm_inputs(words: Tensor, cap_lens: CapLens, regions: Tensor) -> Tensor:
    """Validate the inputs; return cap_lens as an int tensor (B,) on words' device.

    Raises TypeError for a non-float ``words``/``regions`` or mismatched dtypes, ValueError naming
    the argument for wrong shapes, devices, cap_lens dtype or (when given as Python ints) values.
    Tensor cap_lens values are checked by the kernel (CPU) or an asynchronous device assert (CUDA).
    """
    if not isinstance(words, Tensor) or not words.is_floating_point():
        raise TypeError(f"words: expected a floating-point tensor (B, D, T), got {getattr(words, 'dtype', type(words).__name__)}")
    if words.dim() != 3 or 0 in words.shape:
        raise ValueError(f"words: expected a non-empty (B, D, T), got {tuple(words.shape)}")
    B, D, T = words.shape
    if not isinstance(regions, Tensor) or not regions.is_floating_point():
        raise TypeError(f"regions: expected a floating-point tensor (B, D, H, W), got {getattr(regions, 'dtype', type(regions).__name__)}")
    if regions.dim() != 4 or regions.shape[:2] != (B, D) or 0 in regions.shape:
        raise ValueError(f"regions: expected (B={B}, D={D}, H, W), got {tuple(regions.shape)}")
    if regions.dtype != words.dtype:
        raise TypeError(f"regions: expected dtype {words.dtype} (as words), got {regions.dtype}")
    if regions.device != words.device:
        raise ValueError(f"regions: expected device {words.device} (as words), got {regions.device}")
    if isinstance(cap_lens, Tensor):
        if cap_lens.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"cap_lens: expected an int32 or int64 tensor, got {cap_lens.dtype}")
        if cap_lens.shape != (B,):
            raise ValueError(f"cap_lens: expected ({B},), got {tuple(cap_lens.shape)}")
        return cap_lens.to(words.device, non_blocking=True)
    lens = cap_lens_list(cap_lens)
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
    lens = check_damsm_inputs(words, cap_lens, regions)
    # the Triton kernel has no float64 path (tl.dot): float64 on CUDA runs the reference
    if use_fast("damsm_word_similarity", words) and not (words.is_cuda and words.dtype == torch.float64):
        if lens.device.type == "cuda":
            T = words.shape[2]
            torch._assert_async(((lens >= 1) & (lens <= T)).all(), f"cap_lens: expected values in [1, T={T}]")
        sim, attn = torch.ops.attngan_fast.damsm_word_similarity(
            words, lens, regions, float(gamma1), float(gamma2), bool(need_attention)
        )
        return sim, attn if need_attention else None
    return _reference_similarity(words, cap_lens, regions, gamma1, gamma2, need_attention)


def _reference_similarity(
    words: Tensor, cap_lens: CapLens, regions: Tensor, gamma1: float, gamma2: float, need_attention: bool
) -> tuple[Tensor, Optional[Tensor]]:
    """The reference loop (``attngan_fast.losses.word_similarities``) with the op's outputs."""
    from ..losses import word_similarities  # the reference models pull in torchvision: import on use

    lens = cap_lens_list(cap_lens)
    sim, att_maps = word_similarities(regions, words, lens, gamma1, gamma2)
    if not need_attention:
        return sim.to(_sim_dtype(words.dtype)), None
    T = words.shape[2]
    attn = torch.cat([torch.nn.functional.pad(a, (0, 0, 0, 0, 0, T - a.shape[1])) for a in att_maps])
    return sim.to(_sim_dtype(words.dtype)), attn


def _register_triton() -> bool:
    """Register the Triton kernels for "cuda" when a GPU is visible and Triton imports."""
    if not torch.cuda.is_available():
        return False
    try:
        from ..kernels import damsm as triton_damsm
    except ImportError:
        return False
    torch.library.register_kernel("attngan_fast::damsm_word_similarity", "cuda", triton_damsm.damsm_forward)
    torch.library.register_kernel("attngan_fast::damsm_word_similarity_backward", "cuda", triton_damsm.damsm_backward)
    return True


if has_extension():

    @torch.library.register_fake("attngan_fast::damsm_word_similarity")
    def _damsm_fake(words: Tensor, cap_lens: Tensor, regions: Tensor, gamma1: float, gamma2: float,
                    need_attention: bool) -> tuple[Tensor, Tensor]:
        B, _, T = words.shape
        H, W = regions.shape[2:]
        sim = words.new_empty((B, B), dtype=_sim_dtype(words.dtype))
        return sim, words.new_empty((B if need_attention else 0, T, H, W))

    @torch.library.register_fake("attngan_fast::damsm_word_similarity_backward")
    def _damsm_backward_fake(grad_sim: Tensor, words: Tensor, cap_lens: Tensor, regions: Tensor, gamma1: float,
                             gamma2: float) -> tuple[Tensor, Tensor]:
        return (torch.empty_like(words, memory_format=torch.contiguous_format),
                torch.empty_like(regions, memory_format=torch.contiguous_format))

    def _damsm_setup_context(ctx, inputs, output) -> None:
        words, cap_lens, regions, gamma1, gamma2, _ = inputs
        ctx.save_for_backward(words, cap_lens, regions)
        ctx.gammas = (gamma1, gamma2)
        ctx.mark_non_differentiable(output[1])

    def _damsm_backward(ctx, grad_sim: Tensor, grad_attn: Tensor):
        words, cap_lens, regions = ctx.saved_tensors
        grad_words, grad_regions = torch.ops.attngan_fast.damsm_word_similarity_backward(
            grad_sim, words, cap_lens, regions, *ctx.gammas
        )
        return grad_words, None, grad_regions, None, None, None

    torch.library.register_autograd(
        "attngan_fast::damsm_word_similarity", _damsm_backward, setup_context=_damsm_setup_context
    )
    register_devices("damsm_word_similarity", {"cpu", "cuda"} if _register_triton() else {"cpu"})
