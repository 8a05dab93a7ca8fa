"""Word-region attention as a custom op: GlobalAttentionGeneral's core with per-sample masking.

``word_region_attention(h, words, mask, need_weights)``: each region of ``h`` attends over its own
caption's words; ``words`` are the vectors after the attention's 1x1 ``conv_context`` (that conv
stays an ordinary layer). Semantics: :func:`attngan_fast.models.attention.word_region_attention_reference`
with ``mask_mode="per_sample"``, including its all-masked rule (a caption whose words are all
masked gets weights 0 and context 0, with zero gradients).

Kernels: CPU -> C++ (``csrc/cpu/attention.cpp``, any T), CUDA -> Triton (``attngan_fast.kernels.attention``,
T <= 64); other devices, longer captions on CUDA, or the "reference" backend run the reference.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .._extension import has_extension
from ..models.attention import word_region_attention_reference
from ..models.blocks import check_shape
from ._dispatch import register_devices, use_fast

__all__ = ["word_region_attention", "check_word_region_attention_inputs"]

_OP = "word_region_attention"


def check_word_region_attention_inputs(h: Tensor, words: Tensor, mask: Optional[Tensor]) -> None:
    """TypeError/ValueError naming the argument unless h (B, C, H, W), words (B, C, T) and mask
    (B, T) bool/uint8 or None agree in shape, dtype and device."""
    for name, x in (("h", h), ("words", words)):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if mask is not None and (not isinstance(mask, Tensor) or mask.dtype not in (torch.bool, torch.uint8)):
        raise TypeError(f"mask: expected a bool (or uint8) tensor, got {getattr(mask, 'dtype', type(mask).__name__)}")
    sizes: dict[str, int] = {}
    check_shape("h", h, ("B", "C", "H", "W"), sizes)
    check_shape("words", words, ("B", "C", "T"), sizes)
    if mask is not None:
        check_shape("mask", mask, ("B", "T"), sizes)
    if words.dtype != h.dtype:
        raise TypeError(f"words: expected dtype {h.dtype} (that of h), got {words.dtype}")
    for name, x in (("words", words), ("mask", mask)):
        if x is not None and x.device != h.device:
            raise ValueError(f"{name}: expected device {h.device} (that of h), got {x.device}")


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
    if use_fast(_OP, h) and (h.device.type != "cuda" or words.shape[2] <= _CUDA_MAX_WORDS):
        context, weights = torch.ops.attngan_fast.word_region_attention(h, words, mask, need_weights)
    else:
        context, weights = word_region_attention_reference(h, words, mask, "per_sample")
    return context, (weights if need_weights else None)


def _register_cuda_kernels() -> int:
    """Registers the Triton kernels for CUDA tensors; returns the most words they take (0: no GPU or no Triton)."""
    if not torch.cuda.is_available():
        return 0
    try:
        from ..kernels import attention as triton_attention
    except ImportError:
        return 0
    torch.library.register_kernel(f"attngan_fast::{_OP}", "cuda", triton_attention.word_region_attention_forward)
    torch.library.register_kernel(f"attngan_fast::{_OP}_backward", "cuda",
                                  triton_attention.word_region_attention_backward)
    return triton_attention.MAX_WORDS


if has_extension():

    @torch.library.register_fake(f"attngan_fast::{_OP}")
    def _forward_fake(h: Tensor, words: Tensor, mask: Optional[Tensor], need_weights: bool) -> tuple[Tensor, Tensor]:
        B, C, H, W = h.shape
        weights_shape = (B, words.shape[2], H, W) if need_weights else (0,)
        return h.new_empty((B, C, H, W)), h.new_empty(weights_shape)

    @torch.library.register_fake(f"attngan_fast::{_OP}_backward")
    def _backward_fake(grad_context: Tensor, grad_weights: Optional[Tensor], h: Tensor, words: Tensor,
                       mask: Optional[Tensor], weights: Optional[Tensor]) -> tuple[Tensor, Tensor]:
        return h.new_empty(h.shape), words.new_empty(words.shape)

    def _setup_context(ctx, inputs, output) -> None:
        h, words, mask, need_weights = inputs
        # The C++ backward reads the weights when it has them; the Triton one recomputes them
        # (on a GPU reading them costs more than recomputing).
        weights = output[1] if need_weights and h.device.type == "cpu" else None
        ctx.save_for_backward(h, words, mask, weights)
        ctx.set_materialize_grads(False)  # an unused weights output costs nothing in the backward

    def _backward(ctx, grad_context: Optional[Tensor], grad_weights: Optional[Tensor]):
        h, words, mask, weights = ctx.saved_tensors
        if grad_context is None:
            grad_context = torch.zeros_like(h)
        grad_h, grad_words = torch.ops.attngan_fast.word_region_attention_backward(
            grad_context, grad_weights, h, words, mask, weights)
        return grad_h, grad_words, None, None

    torch.library.register_autograd(f"attngan_fast::{_OP}", _backward, setup_context=_setup_context)
    _CUDA_MAX_WORDS = _register_cuda_kernels()
    register_devices(_OP, {"cpu", "cuda"} if _CUDA_MAX_WORDS else {"cpu"})
else:
    _CUDA_MAX_WORDS = 0
