"""The discriminator blocks as one fused op (downBlock, Block3x3_leakRelu, encode_image_by_16times,
the jointConv of D_GET_LOGITS; kernels in csrc/*down_blocks*).

- ``down_block(x, weight, bn, training, stride, padding, negative_slope, addend)``: conv (square
  kernel, no bias) [+ addend] [-> BatchNorm2d] -> LeakyReLU; BatchNorm apply and LeakyReLU in
  one pass after the conv (plus one statistics pass when training); the backward of both in one
  reduce and one apply pass. ``bn=None``: conv -> LeakyReLU (the first conv of
  encode_image_by_16times), in place on the conv output.
- ``tiled_code_conv(code, weight, size, padding)``: the conv (stride 1) of a code tiled over a
  ``size`` map, i.e. jointConv's share of the sentence embedding: the code through each tap,
  ``taps = code @ W`` ((B, E) x (E, Co*K*K), one product per tap instead of per tap and
  position), then per output position the sum of the taps it reads, ``rows @ taps @ cols^T``
  with 0/1 masks (Ho, K), (Wo, K) of the valid taps.

BatchNorm follows ``F.batch_norm`` as in :mod:`attngan_fast.ops.blocks` (batch statistics and a
running-stat update when training, the running statistics otherwise).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .._extension import has_extension
from ._dispatch import register_devices, use_fast
from .blocks import BatchNormArgs, _autocast, _caller_format, _check_bn, _check_x, _stat_dtype, _update_running_stats

__all__ = ["check_down_block_inputs", "down_block", "down_block_reference", "tiled_code_conv",
           "tiled_code_conv_reference"]


def _conv_out_size(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def check_down_block_inputs(x: Tensor, weight: Tensor, bn: Optional[BatchNormArgs], training: bool, stride: int,
                            padding: int, negative_slope: float, addend: Optional[Tensor]) -> None:
    """Raise ``TypeError`` / ``ValueError`` naming the bad argument of :func:`down_block`."""
    _check_x(x)
    if not isinstance(weight, Tensor) or weight.dtype != x.dtype:
        got = getattr(weight, "dtype", type(weight).__name__)
        raise TypeError(f"weight: expected a {x.dtype} tensor like x, got {got}")
    if weight.device != x.device:
        raise ValueError(f"weight: expected device {x.device} like x, got {weight.device}")
    if weight.dim() != 4 or weight.shape[1] != x.shape[1] or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"weight: expected (Co, {x.shape[1]}, K, K) for x of shape {tuple(x.shape)}, "
                         f"got {tuple(weight.shape)}")
    if not isinstance(stride, int) or not isinstance(padding, int) or stride < 1 or padding < 0:
        raise ValueError(f"stride, padding: expected ints >= 1 and >= 0, got {stride!r} and {padding!r}")
    if not negative_slope > 0:
        raise ValueError(f"negative_slope: expected > 0 (the backward reads the output's sign), got {negative_slope}")
    k = weight.shape[2]
    ho, wo = (_conv_out_size(s, k, stride, padding) for s in x.shape[2:])
    if ho < 1 or wo < 1:
        raise ValueError(f"x: a {k}x{k} conv with stride {stride}, padding {padding} needs a map of at least "
                         f"{k - 2 * padding}x{k - 2 * padding}, got {tuple(x.shape[2:])}")
    co = weight.shape[0]
    if addend is not None and (not isinstance(addend, Tensor) or tuple(addend.shape) != (x.shape[0], co, ho, wo)):
        got = tuple(getattr(addend, "shape", ()))
        raise ValueError(f"addend: expected shape {(x.shape[0], co, ho, wo)}, got {got}")
    if bn is not None:
        _check_bn(bn, co, training, x.shape[0] * ho * wo, "bn")


def down_block(x: Tensor, weight: Tensor, bn: Optional[BatchNormArgs], training: bool, stride: int = 2,
               padding: int = 1, negative_slope: float = 0.2, addend: Optional[Tensor] = None) -> Tensor:
    """conv(x, weight, stride, padding) [+ addend] [-> BatchNorm2d(bn)] -> LeakyReLU(negative_slope).

    x: (N, Ci, H, W), weight: (Co, Ci, K, K) (no bias), addend: (N, Co, Ho, Wo) or None, bn over
    Co channels or None -> (N, Co, Ho, Wo) in x's memory format. Running stats in ``bn`` are
    updated when training. Under autocast the conv runs in autocast's dtype, as F.conv2d would.
    """
    check_down_block_inputs(x, weight, bn, training, stride, padding, negative_slope, addend)
    x, weight = _autocast(x, weight)
    if addend is not None:
        addend = addend.to(x.dtype)
    if not use_fast("down_block", x):
        return down_block_reference(x, weight, bn, training, stride, padding, negative_slope, addend)
    if bn is None:
        out, _, _, _ = torch.ops.attngan_fast.down_block(x, weight, addend, None, None, None, None, stride, padding,
                                                         training, 1e-5, negative_slope)
        return out
    out, _, mean, var = torch.ops.attngan_fast.down_block(
        x, weight, addend, bn.weight, bn.bias, None if training else bn.running_mean,
        None if training else bn.running_var, stride, padding, training, bn.eps, negative_slope)
    if training:
        _update_running_stats(bn, mean, var, out.shape[0] * out.shape[2] * out.shape[3])
    return out


def down_block_reference(x: Tensor, weight: Tensor, bn: Optional[BatchNormArgs], training: bool, stride: int = 2,
                         padding: int = 1, negative_slope: float = 0.2, addend: Optional[Tensor] = None) -> Tensor:
    """The plain-PyTorch twin of :func:`down_block` (same arguments, no checks)."""
    y = F.conv2d(x, weight, stride=stride, padding=padding)
    if addend is not None:
        y = y + addend
    if bn is not None:
        y = F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, training, bn.momentum, bn.eps)
    return F.leaky_relu(y, negative_slope)


def _tap_masks(size: int, k: int, padding: int, like: Tensor) -> Tensor:
    """(out, K) 0/1: output position p (stride 1) reads input p + i - padding, valid or not."""
    out = size + 2 * padding - k + 1
    pos = torch.arange(out, device=like.device).unsqueeze(1) + torch.arange(k, device=like.device) - padding
    return ((pos >= 0) & (pos < size)).to(like.dtype)


def tiled_code_conv(code: Tensor, weight: Tensor, size: tuple[int, int], padding: int) -> Tensor:
    """conv2d (stride 1, no bias) of ``code`` tiled over a ``size`` map, without tiling it.

    code: (B, E), weight: (Co, E, K, K) -> (B, Co, Ho, Wo). Equal to
    :func:`tiled_code_conv_reference` up to float rounding (sums in another order).
    """
    if code.dim() != 2 or weight.dim() != 4 or weight.shape[1] != code.shape[1] or weight.shape[2] != weight.shape[3]:
        raise ValueError(f"code, weight: expected (B, E) and (Co, E, K, K), got {tuple(code.shape)} and "
                         f"{tuple(weight.shape)}")
    (b, e), (co, _, k, _) = code.shape, weight.shape
    taps = (code.to(weight.dtype) @ weight.transpose(0, 1).reshape(e, -1)).view(b, co, k, k)  # the code per tap
    rows = _tap_masks(size[0], k, padding, weight)
    cols = _tap_masks(size[1], k, padding, weight)
    return rows @ taps @ cols.t()  # each output position sums the taps it reads


def tiled_code_conv_reference(code: Tensor, weight: Tensor, size: tuple[int, int], padding: int) -> Tensor:
    """The plain-PyTorch twin of :func:`tiled_code_conv`: the conv of the tiled code."""
    tiled = code.view(*code.shape, 1, 1).repeat(1, 1, *size)
    return F.conv2d(tiled, weight, padding=padding)


# ---- fake kernels and autograd ------------------------------------------------------------------


if has_extension():

    @torch.library.register_fake("attngan_fast::down_block")
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

    @torch.library.register_fake("attngan_fast::down_block_backward")
    def _down_block_backward_fake(grad_out, x, weight, bn_weight, bn_bias, saved, mean, var, stride, padding,
                                  training, eps, negative_slope, output_mask):
        def grad_like(t, wanted, fmt):
            return torch.empty_like(t, memory_format=fmt) if wanted else t.new_empty((0,))

        dense = torch.contiguous_format
        stat = x.new_empty((0,), dtype=_stat_dtype(x))
        if bn_weight is None:
            bn_grads = (stat, torch.empty_like(stat))
        else:
            bn_grads = tuple(torch.empty_like(bn_weight, memory_format=dense) for _ in range(2))
        return (grad_like(x, output_mask[0], _caller_format(x)), grad_like(weight, output_mask[1], dense), *bn_grads,
                grad_like(saved, output_mask[2], _caller_format(saved)))

    def _down_block_setup(ctx, inputs, output) -> None:
        x, weight, addend, bn_weight, bn_bias, _, _, stride, padding, training, eps, negative_slope = inputs
        out, conv_out, mean, var = output
        saved = conv_out if bn_weight is not None else out
        ctx.save_for_backward(x, weight, bn_weight, bn_bias, saved, mean, var)
        ctx.args = (stride, padding, training, eps, negative_slope)
        ctx.has_addend = addend is not None
        ctx.mark_non_differentiable(conv_out, mean, var)
        ctx.set_materialize_grads(False)

    def _down_block_backward(ctx, grad_out, _grad_conv_out, _grad_mean, _grad_var):
        if grad_out is None:
            return (None,) * 12
        x, weight, bn_weight, bn_bias, saved, mean, var = ctx.saved_tensors
        need_x, need_w, need_addend, need_bn_w, need_bn_b = (ctx.needs_input_grad[i] for i in range(5))
        gx, gw, gg, gb, ga = torch.ops.attngan_fast.down_block_backward(
            grad_out, x, weight, bn_weight, bn_bias, saved, mean, var, *ctx.args,
            [need_x, need_w, need_addend and ctx.has_addend])
        has_bn = bn_weight is not None
        return (gx if need_x else None, gw if need_w else None, ga if need_addend else None,
                gg if has_bn and need_bn_w else None, gb if has_bn and need_bn_b else None,
                None, None, None, None, None, None, None)

    torch.library.register_autograd("attngan_fast::down_block", _down_block_backward, setup_context=_down_block_setup)

    # The CUDA kernels (csrc/cuda/down_blocks.cu) are built and compile-checked but have not run on
    # a GPU yet: CUDA tensors take the reference (one warning) until `pytest tests/test_down_blocks.py
    # -m cuda` has passed on one (its fixture enables them); then register "cuda" here too.
    register_devices("down_block", {"cpu"})
