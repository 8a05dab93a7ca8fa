"""The discriminator blocks as one fused op (downBlock, Block3x3_leakRelu, encode_image_by_16times,
jointConv of D_GET_LOGITS; kernels in csrc/*down_blocks*).

- ``down_block(x, weight, bn, training, stride, padding, negative_slope, addend)``: conv (square
  kernel, no bias) [+ addend] [-> BatchNorm2d] -> LeakyReLU; the BatchNorm apply and LeakyReLU in
  one pass after the conv (plus one statistics pass when training), their backward in one reduce
  and one apply pass; on the CPU the conv's backward by GEMMs for output maps of <= 16 pixels
  (where oneDNN's weight gradient is far below GEMM speed). ``bn=None``: conv -> LeakyReLU (the
  first conv of encode_image_by_16times), in place on the conv output.
- ``tiled_code_conv(code, weight, size, padding)``: the conv (stride 1) of a code tiled over a
  ``size`` map, i.e. jointConv's share of the sentence embedding, without tiling it: the code
  through each tap, ``taps = code @ W`` ((B, E) x (E, Co*K*K)), then per output position the sum
  of the taps it reads, ``rows @ taps @ cols^T`` with the 0/1 masks (Ho, K), (Wo, K) of the valid
  taps. Plain PyTorch (autograd differentiates it).

Semantics: the twins of :mod:`attngan_fast.reference.blocks`; BatchNorm as in
:mod:`attngan_fast.ops.blocks`. Kernels: CPU -> C++ (``csrc/cpu/down_blocks.cpp``), CUDA -> CUDA C++
(``csrc/cuda/down_blocks.cu``, when built). The CPU kernel takes output maps of at most 16 pixels
(the 4x4 outputs of the deep D blocks and the heads) and convs of at least 2^26 multiply-adds per
call (bird_attn2's D blocks at batch 20: 0.7 GMAC), where it is 1.2-1.7x the reference's fwd+bwd; on
larger maps it is the reference's speed (both run the oneDNN conv) and on small convs (the demo's:
4 MMAC) its fixed costs make it slower (0.4-0.8x), so those run the reference
(:class:`~attngan_fast.ops.dispatch.Limit`).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import reference
from .._extension import has_cuda_kernels, has_extension
from ..reference.blocks import BatchNormArgs
from .blocks import _autocast, _caller_format, _check_bn, _check_x, _stat_dtype, _update_running_stats
from .checks import check_like
from .dispatch import Limit, register_kernels, second_order_backward, use_kernel

__all__ = ["CPU_MAX_OUTPUT_PIXELS", "CPU_MIN_MACS", "NCHW_MACS_FACTOR", "check_down_block_inputs", "down_block",
           "tiled_code_conv"]

CPU_MAX_OUTPUT_PIXELS = 16
"""The CPU kernel's limit: output maps of at most this many pixels (Ho * Wo); larger ones run the reference."""
CPU_MIN_MACS = 1 << 26
"""The CPU kernel's limit: convs of at least this many multiply-adds (N Ho Wo Co Ci K^2) on channels_last
inputs and ``NCHW_MACS_FACTOR`` times as many on NCHW ones; smaller ones run the reference."""
NCHW_MACS_FACTOR = 32
"""oneDNN's NCHW convs are faster than its channels_last ones at these shapes: at bird_attn2's 4x4 blocks
(batch 20, fwd+bwd) the kernel gave 0.85-1.0x on NCHW below ~2 GMAC (1.2-1.4x channels_last), 1.2-1.5x above."""


def _conv_out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def check_down_block_inputs(x: Tensor, weight: Tensor, bn: Optional[BatchNormArgs], training: bool, stride: int,
                            padding: int, negative_slope: float, addend: Optional[Tensor]) -> None:
    """TypeError/ValueError naming the argument unless x (N, Ci, H, W), weight (Co, Ci, K, K), the
    conv geometry, addend (N, Co, Ho, Wo) or None and bn over Co channels (or None) agree."""
    _check_x(x)
    check_like("weight", weight, "x", x)
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight: expected (Co, {x.shape[1]}, K, K) for x of shape {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)}")
    if type(stride) is not int or type(padding) is not int or stride < 1 or padding < 0:
        raise ValueError(f"stride, padding: expected ints >= 1 and >= 0, got {stride!r} and {padding!r}")
    if not isinstance(negative_slope, (int, float)) or not negative_slope > 0:
        raise ValueError(f"negative_slope: expected > 0 (the backward reads the output's sign), got {negative_slope!r}")
    k = weight.shape[2]
    ho, wo = (_conv_out_size(s, k, stride, padding) for s in x.shape[2:])
    if ho < 1 or wo < 1:
        raise ValueError(f"x: expected a map of at least {k - 2 * padding}x{k - 2 * padding} for a {k}x{k} conv "
                         f"with stride {stride} and padding {padding}, got {tuple(x.shape[2:])}")
    co = weight.shape[0]
    if addend is not None:
        check_like("addend", addend, "x", x)
        if tuple(addend.shape) != (x.shape[0], co, ho, wo):
            raise ValueError(f"addend: expected shape {(x.shape[0], co, ho, wo)}, got {tuple(addend.shape)}")
    if bn is not None:
        _check_bn(bn, co, training, x.shape[0] * ho * wo, "bn", x.dtype)


def down_block(x: Tensor, weight: Tensor, bn: Optional[BatchNormArgs], training: bool, stride: int = 2,
               padding: int = 1, negative_slope: float = 0.2, addend: Optional[Tensor] = None) -> Tensor:
    """conv(x, weight, stride, padding) [+ addend] [-> BatchNorm2d(bn)] -> LeakyReLU(negative_slope).

    x: (N, Ci, H, W), weight: (Co, Ci, K, K) (no bias), addend: (N, Co, Ho, Wo) or None, bn over Co
    channels or None -> (N, Co, Ho, Wo) in x's memory format. Running stats in ``bn`` are updated
    when training. Under autocast the conv runs in autocast's dtype, as F.conv2d would.
    """
    xc, wc = _autocast(x, weight)
    if isinstance(addend, Tensor) and isinstance(xc, Tensor):
        addend = addend.to(xc.dtype)
    check_down_block_inputs(xc, wc, bn, training, stride, padding, negative_slope, addend)
    if not use_kernel("down_block", xc, wc, stride, padding):
        return reference.down_block(xc, wc, bn, training, stride, padding, negative_slope, addend)
    if bn is None:
        out, _, _, _ = torch.ops.attngan_fast.down_block(xc, wc, addend, None, None, None, None, stride, padding,
                                                         training, 1e-5, negative_slope)
        return out
    out, _, mean, var = torch.ops.attngan_fast.down_block(
        xc, wc, addend, bn.weight, bn.bias, None if training else bn.running_mean,
        None if training else bn.running_var, stride, padding, training, bn.eps, negative_slope)
    if training:
        _update_running_stats(bn, mean, var, out.shape[0] * out.shape[2] * out.shape[3])
    return out


def _tap_masks(size: int, k: int, padding: int, like: Tensor) -> Tensor:
    """(out, K) 0/1: output position p (stride 1) reads input p + i - padding, valid or not."""
    out = size + 2 * padding - k + 1
    pos = torch.arange(out, device=like.device).unsqueeze(1) + torch.arange(k, device=like.device) - padding
    return ((pos >= 0) & (pos < size)).to(like.dtype)


def tiled_code_conv(code: Tensor, weight: Tensor, size: tuple[int, int], padding: int) -> Tensor:
    """conv2d (stride 1, no bias) of ``code`` tiled over a ``size`` map, without tiling it.

    code: (B, E), weight: (Co, E, K, K) -> (B, Co, Ho, Wo), in weight's dtype. Equal to
    :func:`attngan_fast.reference.tiled_code_conv` up to float rounding (sums in another order).
    """
    check_like("code", code, "weight", weight)
    if code.dim() != 2 or weight.dim() != 4 or weight.shape[1] != code.shape[1] or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"code, weight: expected (B, E) and (Co, E, K, K), got {tuple(code.shape)} and "
                         f"{tuple(weight.shape)}")
    (b, e), (co, _, k, _) = code.shape, weight.shape
    taps = (code @ weight.transpose(0, 1).reshape(e, -1)).view(b, co, k, k)  # the code through each tap
    rows = _tap_masks(size[0], k, padding, weight)
    cols = _tap_masks(size[1], k, padding, weight)
    return rows @ taps @ cols.t()  # each output position sums the taps it reads


# ---- fakes, autograd and per-device kernels -----------------------------------------------------


def _down_block_fake(x, weight, addend, bn_weight, bn_bias, running_mean, running_var, stride, padding, training,
                     eps, negative_slope):
    k = weight.shape[2]
    shape = (x.shape[0], weight.shape[0], *(_conv_out_size(s, k, stride, padding) for s in x.shape[2:]))
    out = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_caller_format(x))
    if bn_weight is None:
        stat = x.new_empty((0,), dtype=_stat_dtype(x))
        return out, x.new_empty((0,)), stat, torch.empty_like(stat)
    stat = x.new_empty((weight.shape[0],), dtype=_stat_dtype(x))
    return out, torch.empty_like(out), stat, torch.empty_like(stat)


def _down_block_backward_fake(grad_out, x, weight, bn_weight, bn_bias, saved, mean, var, stride, padding, training,
                              eps, negative_slope, output_mask):
    def grad_like(t, wanted, fmt):
        return torch.empty_like(t, memory_format=fmt) if wanted else t.new_empty((0,))

    dense = torch.contiguous_format
    if bn_weight is None:
        stat = x.new_empty((0,), dtype=_stat_dtype(x))
        bn_grads = (stat, torch.empty_like(stat))
    else:
        bn_grads = tuple(torch.empty_like(bn_weight, memory_format=dense) for _ in range(2))
    return (grad_like(x, output_mask[0], _caller_format(x)), grad_like(weight, output_mask[1], dense), *bn_grads,
            grad_like(saved, output_mask[2], _caller_format(saved)))


def _down_block_setup_context(ctx, inputs, output) -> None:
    x, weight, addend, bn_weight, bn_bias, _, _, stride, padding, training, eps, negative_slope = inputs
    out, conv_out, mean, var = output
    saved = conv_out if bn_weight is not None else out
    ctx.save_for_backward(x, weight, addend, bn_weight, bn_bias, saved, mean, var)
    ctx.args = (stride, padding, training, eps, negative_slope)
    ctx.mark_non_differentiable(conv_out, mean, var)
    ctx.set_materialize_grads(False)


def _down_block_backward(ctx, grad_out, _grad_conv_out, _grad_mean, _grad_var):
    if grad_out is None:
        return (None,) * 12
    x, weight, addend, bn_weight, bn_bias, saved, mean, var = ctx.saved_tensors
    stride, padding, training, eps, negative_slope = ctx.args
    has_bn, has_addend = bn_weight is not None, addend is not None
    need = ctx.needs_input_grad
    if torch.is_grad_enabled():  # a second derivative is asked for: the reference's (running stats untouched)
        def down_block_of(x_, w_, a_, g_, b_):
            bn = None
            if has_bn:
                bn = BatchNormArgs(g_, b_, *((None, None) if training else (mean, var)), eps=eps)
            return reference.down_block(x_, w_, bn, training, stride, padding, negative_slope, a_)

        grads = second_order_backward(down_block_of, (x, weight, addend, bn_weight, bn_bias), (grad_out,), need[:5])
        return (*grads, *(None,) * 7)
    gx, gw, gg, gb, ga = torch.ops.attngan_fast.down_block_backward(
        grad_out, x, weight, bn_weight, bn_bias, saved, mean, var, *ctx.args,
        [need[0], need[1], need[2] and has_addend])
    return (gx if need[0] else None, gw if need[1] else None, ga if need[2] and has_addend else None,
            gg if has_bn and need[3] else None, gb if has_bn and need[4] else None, *(None,) * 7)


def _output_pixels(x: Tensor, weight: Tensor, stride: int, padding: int) -> int:
    k = weight.shape[2]
    ho, wo = (_conv_out_size(s, k, stride, padding) for s in x.shape[2:])
    return ho * wo


def _small_output(x: Tensor, weight: Tensor, stride: int, padding: int) -> bool:
    return _output_pixels(x, weight, stride, padding) <= CPU_MAX_OUTPUT_PIXELS


def _large_conv(x: Tensor, weight: Tensor, stride: int, padding: int) -> bool:
    limit = CPU_MIN_MACS * (1 if _caller_format(x) == torch.channels_last else NCHW_MACS_FACTOR)
    return x.shape[0] * _output_pixels(x, weight, stride, padding) * weight.numel() >= limit


if has_extension():
    torch.library.register_fake("attngan_fast::down_block", _down_block_fake)
    torch.library.register_fake("attngan_fast::down_block_backward", _down_block_backward_fake)
    torch.library.register_autograd("attngan_fast::down_block", _down_block_backward,
                                    setup_context=_down_block_setup_context)
    # csrc/cpu/down_blocks.cpp and csrc/cuda/down_blocks.cu, registered by _C
    register_kernels("down_block", ["cpu"], [
        Limit(f"output maps of at most {CPU_MAX_OUTPUT_PIXELS} pixels (on larger ones the reference is as fast)",
              _small_output, quiet=True),
        Limit("convs of at least 2^26 multiply-adds channels_last, 2^31 NCHW (on smaller ones the reference is "
              "faster)", _large_conv,
              quiet=True)])
    if has_cuda_kernels():
        register_kernels("down_block", ["cuda"])
