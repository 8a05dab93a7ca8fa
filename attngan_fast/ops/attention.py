"""Word-region attention as a custom op: GlobalAttentionGeneral's core with per-sample masking.

``word_region_attention(h, words, mask, need_weights)``: each region of ``h`` attends over its own
caption's words; ``words`` are the vectors after the attention's 1x1 ``conv_context`` (that conv
stays an ordinary layer). Semantics: :func:`attngan_fast.reference.word_region_attention` with
``mask_mode="per_sample"``, including its all-masked rule (a caption whose words are all masked
gets weights 0 and context 0, with zero gradients).

Kernels: CPU -> C++ (``csrc/cpu/attention.cpp``, any T); CUDA -> Triton
(``attngan_fast.kernels.attention``, T <= ``MAX_WORDS``). Other devices, longer captions on CUDA,
or the "reference" backend run the reference (:mod:`attngan_fast.ops.dispatch`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .._extension import has_extension
from .checks import check_float_tensor, check_like, check_shape, describe
from .dispatch import Limit, register_kernels, register_triton, second_order_backward, use_kernel

__all__ = ["check_word_region_attention_inputs", "triton_limits", "word_region_attention"]

_OP = "word_region_attention"


def check_word_region_attention_inputs(h: Tensor, words: Tensor, mask: Optional[Tensor]) -> None:
    """TypeError/ValueError naming the argument unless h (B, C, H, W), words (B, C, T) and mask
    (B, T) bool/uint8 or None agree in shape, dtype and device."""
    check_float_tensor("h", h)
    check_float_tensor("words", words)
    if mask is not None and (not isinstance(mask, Tensor) or mask.dtype not in (torch.bool, torch.uint8)):
        raise TypeError(f"mask: expected a bool (or uint8) tensor, got {describe(mask)}")
    sizes: dict[str, int] = {}
    check_shape("h", h, ("B", "C", "H", "W"), sizes)
    check_shape("words", words, ("B", "C", "T"), sizes)
    if mask is not None:
        check_shape("mask", mask, ("B", "T"), sizes)
    check_like("words", words, "h", h)
    if mask is not None:
        check_like("mask", mask, "h", h, dtype=False)


def word_region_attention(
    h: Tensor, words: Tensor, mask: Optional[Tensor] = None, need_weights: bool = False
) -> tuple[Tensor, Optional[Tensor]]:
    """Attention of every region over its caption's words, softmax over words.

    h: (B, C, H, W) regions (NCHW or channels_last); words: (B, C, T) projected words (keys and
    values); mask: (B, T) bool, True = padded word, or None.

    Returns context (B, C, H, W) and, if ``need_weights``, the weights (B, T, H, W) (else None).
    A sample whose words are all masked gets weights 0 and context 0.

    On the CPU the backward reads the returned weights instead of recomputing them (they are saved
    for backward: modifying them in place before the backward is an autograd error).
    """
    check_word_region_attention_inputs(h, words, mask)
    if mask is not None:
        mask = mask.bool()
    if use_kernel(_OP, h, words, mask):
        context, weights = torch.ops.attngan_fast.word_region_attention(h, words, mask, need_weights)
    else:
        context, weights = reference.word_region_attention(h, words, mask, "per_sample")
    return context, (weights if need_weights else None)


# ---- fake, autograd and per-device kernels --------------------------------------------------------


def _word_region_attention_fake(h: Tensor, words: Tensor, mask: Optional[Tensor],
                                need_weights: bool) -> tuple[Tensor, Tensor]:
    B, C, H, W = h.shape
    weights_shape = (B, words.shape[2], H, W) if need_weights else (0,)
    return h.new_empty((B, C, H, W)), h.new_empty(weights_shape)


def _word_region_attention_backward_fake(grad_context: Tensor, grad_weights: Optional[Tensor], h: Tensor,
                                         words: Tensor, mask: Optional[Tensor],
                                         weights: Optional[Tensor]) -> tuple[Tensor, Tensor]:
    return h.new_empty(h.shape), words.new_empty(words.shape)


def _word_region_attention_setup_context(ctx, inputs, output) -> None:
    h, words, mask, need_weights = inputs
    # The C++ backward reads the weights when it has them; the Triton one recomputes them
    # (on a GPU reading them costs more than recomputing).
    weights = output[1] if need_weights and h.device.type == "cpu" else None
    ctx.save_for_backward(h, words, mask, weights)
    ctx.set_materialize_grads(False)  # an unused weights output costs nothing in the backward


def _word_region_attention_backward(ctx, grad_context: Optional[Tensor], grad_weights: Optional[Tensor]):
    h, words, mask, weights = ctx.saved_tensors
    if torch.is_grad_enabled():  # a second derivative is asked for: the reference's
        grad_h, grad_words, _ = second_order_backward(
            lambda h_, w_, m_: reference.word_region_attention(h_, w_, m_, "per_sample"), (h, words, mask),
            (grad_context, grad_weights), ctx.needs_input_grad[:3])
        return grad_h, grad_words, None, None
    if grad_context is None:
        grad_context = torch.zeros_like(h)
    grad_h, grad_words = torch.ops.attngan_fast.word_region_attention_backward(
        grad_context, grad_weights, h, words, mask, weights)
    return grad_h, grad_words, None, None


def triton_limits() -> list[Limit]:
    """The inputs the Triton kernels cannot take (imports Triton): more than ``MAX_WORDS`` words."""
    from ..kernels.attention import MAX_WORDS

    return [Limit(f"at most {MAX_WORDS} words (T <= {MAX_WORDS})", lambda h, words, mask: words.shape[2] <= MAX_WORDS)]


def _register_triton_kernels() -> list[Limit]:
    """The Triton kernels for CUDA tensors (imports Triton); returns their limits."""
    from ..kernels import attention as triton_attention

    torch.library.register_kernel(f"attngan_fast::{_OP}", "cuda", triton_attention.word_region_attention_forward)
    torch.library.register_kernel(f"attngan_fast::{_OP}_backward", "cuda",
                                  triton_attention.word_region_attention_backward)
    return triton_limits()


if has_extension():
    torch.library.register_fake(f"attngan_fast::{_OP}", _word_region_attention_fake)
    torch.library.register_fake(f"attngan_fast::{_OP}_backward", _word_region_attention_backward_fake)
    torch.library.register_autograd(f"attngan_fast::{_OP}", _word_region_attention_backward,
                                    setup_context=_word_region_attention_setup_context)
    register_kernels(_OP, ["cpu"])  # csrc/cpu/attention.cpp, registered by _C
    register_triton(_OP, _register_triton_kernels)
