"""The generator blocks as fused ops (upBlock, Block3x3_relu, ResBlock; kernels in csrc/*blocks*).

- ``upsample_conv3x3(x, weight)``: conv3x3 (padding 1, no bias) of the nearest-2x upsampled x,
  computed as four 2x2 convolutions of x itself (the phase decomposition, csrc/blocks.h):
  2.25x fewer multiply-adds and no upsampled tensor.
- ``up_block(x, weight, bn, training, upsample)``: [upsample2x] -> conv3x3 -> BatchNorm2d -> GLU,
  the BatchNorm apply, GLU and phase interleave in one pass.
- ``res_block(x, weight1, bn1, weight2, bn2, training)``: x + BN(conv3x3(GLU(BN(conv3x3(x))))).

Semantics: the twins of :mod:`attngan_fast.reference.blocks`. BatchNorm follows ``F.batch_norm``:
``training=True`` normalizes with the batch statistics and, when running statistics are given,
updates them in place (momentum, unbiased variance); ``training=False`` uses the running
statistics, folded into the epilogue's per-channel ``z = y * scale + shift`` (no pass of its own).
For an ``nn.BatchNorm2d``, ``batch_norm_args(module)`` gives the arguments (no side effect) and
``count_batch(module)`` does its ``num_batches_tracked`` bookkeeping, after the op ran.

Kernels: CPU -> C++ (``csrc/cpu/blocks.cpp``), CUDA -> CUDA C++ (``csrc/cuda/blocks.cu``, when
built); no size or dtype limits. Other devices or the "reference" backend run the reference.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from torch import Tensor

from .. import reference
from .._extension import has_cuda_kernels, has_extension
from ..reference.blocks import BatchNormArgs
from .checks import check_float_tensor, check_like
from .dispatch import register_kernels, second_order_backward, use_kernel

__all__ = [
    "BatchNormArgs",
    "batch_norm_args",
    "check_res_block_inputs",
    "check_up_block_inputs",
    "check_upsample_conv3x3_inputs",
    "count_batch",
    "res_block",
    "up_block",
    "upsample_conv3x3",
    "uses_batch_stats",
]


# ---- nn.BatchNorm2d bookkeeping -----------------------------------------------------------------


def uses_batch_stats(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    """True when ``bn`` normalizes with batch statistics (train mode, or no running stats)."""
    return bn.training or (bn.running_mean is None and bn.running_var is None)


def _counts_batches(bn: nn.modules.batchnorm._BatchNorm) -> bool:
    return bn.training and bn.track_running_stats and bn.num_batches_tracked is not None


def batch_norm_args(bn: nn.modules.batchnorm._BatchNorm) -> BatchNormArgs:
    """The arguments ``bn.forward`` would pass to ``F.batch_norm`` for its next batch; no side effect.

    ``momentum=None`` becomes the cumulative average 1 / (num_batches_tracked + 1), the factor of
    the batch that :func:`count_batch` then counts.
    """
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.momentum is None and _counts_batches(bn):
        factor = 1.0 / (float(bn.num_batches_tracked) + 1.0)
    keep_stats = not bn.training or bn.track_running_stats
    return BatchNormArgs(bn.weight, bn.bias, bn.running_mean if keep_stats else None,
                         bn.running_var if keep_stats else None, factor, bn.eps)


def count_batch(bn: nn.modules.batchnorm._BatchNorm) -> None:
    """``nn.BatchNorm2d.forward``'s count of one batch: ``num_batches_tracked += 1`` when training with
    running stats. Called once the op that normalized the batch ran (its inputs were valid)."""
    if _counts_batches(bn):
        bn.num_batches_tracked.add_(1)


# ---- input checks -------------------------------------------------------------------------------


def _check_x(x: Tensor) -> None:
    check_float_tensor("x", x)
    if x.dim() != 4:
        raise ValueError(f"x: expected (N, C, H, W), got shape {tuple(x.shape)}")


def _check_weight(x: Tensor, weight: Tensor, name: str, out_channels: Optional[int] = None) -> None:
    check_like(name, weight, "x", x)
    co = weight.shape[0] if weight.dim() == 4 and out_channels is None else out_channels
    if weight.dim() != 4 or weight.shape[1:] != (x.shape[1], 3, 3) or weight.shape[0] != co:
        raise ValueError(f"{name}: expected ({'Co' if out_channels is None else co}, {x.shape[1]}, 3, 3) "
                         f"for x of shape {tuple(x.shape)}, got {tuple(weight.shape)}")


def _check_glu_channels(weight: Tensor, name: str) -> None:
    if weight.shape[0] % 2:
        raise ValueError(f"{name}: GLU needs an even number of conv output channels (dim 0), "
                         f"got {weight.shape[0]} in {tuple(weight.shape)}")


def _check_bn(bn: BatchNormArgs, channels: int, training: bool, count: int, name: str,
              dtype: Optional[torch.dtype] = None) -> None:
    for field in ("weight", "bias", "running_mean", "running_var"):
        t = getattr(bn, field)
        if t is None and field in ("weight", "bias"):
            raise ValueError(f"{name}.{field}: the fused blocks need an affine BatchNorm, got None")
        if t is not None and tuple(t.shape) != (channels,):
            raise ValueError(f"{name}.{field}: expected shape ({channels},), got {tuple(t.shape)}")
        # as F.batch_norm: parameters of x's dtype, or float32 ones for float16 / bfloat16 x
        low = dtype in (torch.float16, torch.bfloat16)
        if t is not None and dtype is not None and t.dtype != dtype and not (low and t.dtype == torch.float32):
            raise TypeError(f"{name}.{field}: expected dtype {dtype} (that of x)"
                            f"{' or float32' if low else ''}, got {t.dtype}")
    if (bn.running_mean is None) != (bn.running_var is None):
        raise ValueError(f"{name}: give both running_mean and running_var, or neither")
    if not training and bn.running_mean is None:
        raise ValueError(f"{name}: running_mean and running_var are required when training=False")
    if training and count <= 1:
        raise ValueError(f"{name}: expected more than 1 value per channel when training, got {count}")


def check_upsample_conv3x3_inputs(x: Tensor, weight: Tensor) -> None:
    """TypeError/ValueError naming the argument unless x (N, Ci, H, W) and weight (Co, Ci, 3, 3) agree."""
    _check_x(x)
    _check_weight(x, weight, "weight")


def check_up_block_inputs(x: Tensor, weight: Tensor, bn: BatchNormArgs, training: bool, upsample: bool) -> None:
    """As :func:`check_upsample_conv3x3_inputs`, plus an even Co and bn over Co channels (more than one
    value per channel when training)."""
    check_upsample_conv3x3_inputs(x, weight)
    _check_glu_channels(weight, "weight")
    s = 2 if upsample else 1
    _check_bn(bn, weight.shape[0], training, x.shape[0] * x.shape[2] * x.shape[3] * s * s, "bn", x.dtype)


def check_res_block_inputs(x: Tensor, weight1: Tensor, bn1: BatchNormArgs, weight2: Tensor, bn2: BatchNormArgs,
                           training: bool) -> None:
    """TypeError/ValueError naming the argument unless x (N, C, H, W), weight1 (2C, C, 3, 3), bn1 over
    2C, weight2 (C, C, 3, 3) and bn2 over C agree."""
    _check_x(x)
    c = x.shape[1]
    _check_weight(x, weight1, "weight1", 2 * c)
    _check_weight(x, weight2, "weight2", c)
    count = x.shape[0] * x.shape[2] * x.shape[3]
    _check_bn(bn1, 2 * c, training, count, "bn1", x.dtype)
    _check_bn(bn2, c, training, count, "bn2", x.dtype)


def _autocast(x: Tensor, *weights: Tensor) -> tuple[Tensor, ...]:
    """x and the conv weights in autocast's dtype when autocast is on for x's device (as F.conv2d
    would run them); BatchNorm parameters stay as they are (the kernels read them in fp32).
    Non-tensors pass through (the checks name them)."""
    if not isinstance(x, Tensor) or not torch.is_autocast_enabled(x.device.type):
        return (x, *weights)
    dtype = torch.get_autocast_dtype(x.device.type)
    return tuple(t.to(dtype) if isinstance(t, Tensor) else t for t in (x, *weights))


# ---- running statistics -------------------------------------------------------------------------


def _update_running_stats(bn: BatchNormArgs, mean: Tensor, var: Tensor, count: int) -> None:
    """running = (1 - momentum) * running + momentum * batch, with the unbiased batch variance."""
    if bn.running_mean is None:
        return
    with torch.no_grad():
        m = bn.momentum
        bn.running_mean.mul_(1.0 - m).add_(mean.to(bn.running_mean.dtype), alpha=m)
        bn.running_var.mul_(1.0 - m).add_(var.to(bn.running_var.dtype), alpha=m * count / (count - 1))


# ---- public functions ---------------------------------------------------------------------------


def upsample_conv3x3(x: Tensor, weight: Tensor) -> Tensor:
    """conv3x3 (padding 1, no bias) of nearest-2x-upsampled x.

    x: (N, Ci, H, W), weight: (Co, Ci, 3, 3) -> (N, Co, 2H, 2W), in x's memory format.
    """
    xc, wc = _autocast(x, weight)
    check_upsample_conv3x3_inputs(xc, wc)
    if not use_kernel("upsample_conv3x3", xc):
        return reference.upsample_conv3x3(xc, wc)
    return torch.ops.attngan_fast.upsample_conv3x3(xc, wc)


def up_block(x: Tensor, weight: Tensor, bn: BatchNormArgs, training: bool, upsample: bool = True) -> Tensor:
    """[nearest-2x upsample] -> conv3x3 -> BatchNorm2d -> GLU (upBlock; Block3x3_relu without upsample).

    x: (N, Ci, H, W), weight: (2C, Ci, 3, 3), bn over 2C channels -> (N, C, S*H, S*W), S = 2 if
    upsample else 1, in x's memory format. Running stats in ``bn`` are updated when training.
    """
    xc, wc = _autocast(x, weight)
    check_up_block_inputs(xc, wc, bn, training, upsample)
    if not use_kernel("up_block", xc):
        return reference.up_block(xc, wc, bn, training, upsample)
    out, _, mean, var = torch.ops.attngan_fast.up_block(
        xc, wc, bn.weight, bn.bias, None if training else bn.running_mean, None if training else bn.running_var,
        upsample, training, bn.eps)
    if training:
        s = 2 if upsample else 1
        _update_running_stats(bn, mean, var, xc.shape[0] * xc.shape[2] * xc.shape[3] * s * s)
    return out


def res_block(x: Tensor, weight1: Tensor, bn1: BatchNormArgs, weight2: Tensor, bn2: BatchNormArgs,
              training: bool) -> Tensor:
    """ResBlock: x + BN2(conv3x3(GLU(BN1(conv3x3(x))))).

    x: (N, C, H, W), weight1: (2C, C, 3, 3), bn1 over 2C, weight2: (C, C, 3, 3), bn2 over C ->
    (N, C, H, W) in x's memory format. Running stats in bn1/bn2 are updated when training. Under
    autocast the convs run in autocast's dtype and the sum is promoted to x's dtype, as in eager.
    """
    xc, wc1, wc2 = _autocast(x, weight1, weight2)
    check_res_block_inputs(xc, wc1, bn1, wc2, bn2, training)
    if not use_kernel("res_block", xc):
        return reference.res_block(x, weight1, bn1, weight2, bn2, training)  # autocast casts the convs' inputs
    stats1 = (None, None) if training else (bn1.running_mean, bn1.running_var)
    stats2 = (None, None) if training else (bn2.running_mean, bn2.running_var)
    out, _, mean1, var1, _, _, mean2, var2 = torch.ops.attngan_fast.res_block(
        xc, wc1, bn1.weight, bn1.bias, *stats1, wc2, bn2.weight, bn2.bias, *stats2, training, bn1.eps, bn2.eps)
    if training:
        count = xc.shape[0] * xc.shape[2] * xc.shape[3]
        _update_running_stats(bn1, mean1, var1, count)
        _update_running_stats(bn2, mean2, var2, count)
    return out.to(torch.promote_types(out.dtype, x.dtype))


# ---- fakes, autograd and per-device kernels -----------------------------------------------------


def _caller_format(x: Tensor) -> torch.memory_format:
    """The memory format of the outputs and input grads (csrc/blocks.h: caller_format)."""
    channels_last = x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def _stat_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _conv_out_like(x: Tensor, channels: int, s: int) -> Tensor:
    """The saved conv output (csrc/blocks.h PhaseGeom::conv_out_sizes): per-phase GEMMs on maps of
    at most 64 pixels (4N, Co, H, W), else one conv (N, S*S*Co, H+S-1, W+S-1); channels_last."""
    n, _, h, w = x.shape
    size = (4 * n, channels, h, w) if s == 2 and h * w <= 64 else (n, s * s * channels, h + s - 1, w + s - 1)
    return torch.empty(size, dtype=x.dtype, device=x.device, memory_format=torch.channels_last)


def _out_like(x: Tensor, channels: int, s: int) -> Tensor:
    n, _, h, w = x.shape
    return torch.empty((n, channels, s * h, s * w), dtype=x.dtype, device=x.device, memory_format=_caller_format(x))


def _upsample_conv3x3_fake(x, weight):
    return _out_like(x, weight.shape[0], 2)


def _upsample_conv3x3_backward_fake(grad_out, x, weight):
    return (torch.empty_like(x, memory_format=_caller_format(x)),
            torch.empty_like(weight, memory_format=torch.contiguous_format))


def _upsample_conv3x3_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _upsample_conv3x3_backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    if torch.is_grad_enabled():  # a second derivative is asked for: the reference's
        return second_order_backward(reference.upsample_conv3x3, (x, weight), (grad_out,), ctx.needs_input_grad)
    return torch.ops.attngan_fast.upsample_conv3x3_backward(grad_out, x, weight)


def _up_block_fake(x, weight, bn_weight, bn_bias, running_mean, running_var, upsample, training, eps):
    co, s = weight.shape[0], 2 if upsample else 1
    stat = x.new_empty((co,), dtype=_stat_dtype(x))
    return _out_like(x, co // 2, s), _conv_out_like(x, co, s), stat, torch.empty_like(stat)


def _up_block_backward_fake(grad_out, x, weight, bn_weight, bn_bias, conv_out, mean, var, upsample, training, eps):
    return (torch.empty_like(x, memory_format=_caller_format(x)),
            torch.empty_like(weight, memory_format=torch.contiguous_format),
            torch.empty_like(bn_weight, memory_format=torch.contiguous_format),
            torch.empty_like(bn_weight, memory_format=torch.contiguous_format))


def _up_block_setup_context(ctx, inputs, output) -> None:
    x, weight, bn_weight, bn_bias, _, _, upsample, training, eps = inputs
    _, conv_out, mean, var = output
    ctx.save_for_backward(x, weight, bn_weight, bn_bias, conv_out, mean, var)
    ctx.upsample, ctx.training, ctx.eps = upsample, training, eps
    ctx.mark_non_differentiable(conv_out, mean, var)
    ctx.set_materialize_grads(False)  # no zero-filled grads for the saved-only outputs


def _up_block_backward(ctx, grad_out, _grad_conv_out, _grad_mean, _grad_var):
    if grad_out is None:
        return (None,) * 9
    x, weight, bn_weight, bn_bias, conv_out, mean, var = ctx.saved_tensors
    if torch.is_grad_enabled():  # a second derivative is asked for: the reference's (running stats untouched)
        def up_block_of(x_, w_, g_, b_):
            stats = (None, None) if ctx.training else (mean, var)
            return reference.up_block(x_, w_, BatchNormArgs(g_, b_, *stats, eps=ctx.eps), ctx.training, ctx.upsample)

        grads = second_order_backward(up_block_of, (x, weight, bn_weight, bn_bias), (grad_out,),
                                      ctx.needs_input_grad[:4])
        return (*grads, None, None, None, None, None)
    grads = torch.ops.attngan_fast.up_block_backward(grad_out, x, weight, bn_weight, bn_bias, conv_out, mean, var,
                                                     ctx.upsample, ctx.training, ctx.eps)
    return (*grads, None, None, None, None, None)


def _res_block_fake(x, weight1, bn1_weight, bn1_bias, running_mean1, running_var1, weight2, bn2_weight, bn2_bias,
                    running_mean2, running_var2, training, eps1, eps2):
    c = x.shape[1]
    stat1 = x.new_empty((2 * c,), dtype=_stat_dtype(x))
    stat2 = x.new_empty((c,), dtype=_stat_dtype(x))
    return (_out_like(x, c, 1), _conv_out_like(x, 2 * c, 1), stat1, torch.empty_like(stat1),
            _conv_out_like(x, c, 1), _conv_out_like(x, c, 1), stat2, torch.empty_like(stat2))


def _res_block_backward_fake(grad_out, x, weight1, bn1_weight, bn1_bias, conv1_out, mean1, var1, hidden, weight2,
                             bn2_weight, conv2_out, mean2, var2, training, eps1, eps2):
    dense = torch.contiguous_format
    return (torch.empty_like(x, memory_format=_caller_format(x)), torch.empty_like(weight1, memory_format=dense),
            torch.empty_like(bn1_weight, memory_format=dense), torch.empty_like(bn1_weight, memory_format=dense),
            torch.empty_like(weight2, memory_format=dense), torch.empty_like(bn2_weight, memory_format=dense),
            torch.empty_like(bn2_weight, memory_format=dense))


def _res_block_setup_context(ctx, inputs, output) -> None:
    x, weight1, bn1_weight, bn1_bias, _, _, weight2, bn2_weight, _, _, _, training, eps1, eps2 = inputs
    _, conv1_out, mean1, var1, hidden, conv2_out, mean2, var2 = output
    ctx.save_for_backward(x, weight1, bn1_weight, bn1_bias, conv1_out, mean1, var1, hidden, weight2, bn2_weight,
                          conv2_out, mean2, var2)
    ctx.training, ctx.eps1, ctx.eps2 = training, eps1, eps2
    ctx.mark_non_differentiable(*output[1:])
    ctx.set_materialize_grads(False)


def _res_block_backward(ctx, grad_out, *_grad_saved):
    if grad_out is None:
        return (None,) * 14
    if torch.is_grad_enabled():  # a second derivative is asked for: the reference's (running stats untouched)
        x, weight1, bn1_weight, bn1_bias, _, mean1, var1, _, weight2, bn2_weight, _, mean2, var2 = ctx.saved_tensors
        bn2_bias = torch.zeros_like(bn2_weight, requires_grad=True)  # not saved: no derivative depends on it

        def res_block_of(x_, w1, g1, b1, w2, g2, b2):
            stats1 = (None, None) if ctx.training else (mean1, var1)
            stats2 = (None, None) if ctx.training else (mean2, var2)
            return reference.res_block(x_, w1, BatchNormArgs(g1, b1, *stats1, eps=ctx.eps1), w2,
                                       BatchNormArgs(g2, b2, *stats2, eps=ctx.eps2), ctx.training)

        need = ctx.needs_input_grad
        gx, gw1, gg1, gb1, gw2, gg2, gb2 = second_order_backward(
            res_block_of, (x, weight1, bn1_weight, bn1_bias, weight2, bn2_weight, bn2_bias), (grad_out,),
            (need[0], need[1], need[2], need[3], need[6], need[7], need[8]))
        return gx, gw1, gg1, gb1, None, None, gw2, gg2, gb2, None, None, None, None, None
    gx, gw1, gg1, gb1, gw2, gg2, gb2 = torch.ops.attngan_fast.res_block_backward(
        grad_out, *ctx.saved_tensors, ctx.training, ctx.eps1, ctx.eps2)
    return gx, gw1, gg1, gb1, None, None, gw2, gg2, gb2, None, None, None, None, None


if has_extension():
    for _op, _fake, _backward_fake, _backward, _setup_context in (
        ("upsample_conv3x3", _upsample_conv3x3_fake, _upsample_conv3x3_backward_fake, _upsample_conv3x3_backward,
         _upsample_conv3x3_setup_context),
        ("up_block", _up_block_fake, _up_block_backward_fake, _up_block_backward, _up_block_setup_context),
        ("res_block", _res_block_fake, _res_block_backward_fake, _res_block_backward, _res_block_setup_context),
    ):
        torch.library.register_fake(f"attngan_fast::{_op}", _fake)
        torch.library.register_fake(f"attngan_fast::{_op}_backward", _backward_fake)
        torch.library.register_autograd(f"attngan_fast::{_op}", _backward, setup_context=_setup_context)
        # csrc/cpu/blocks.cpp and csrc/cuda/blocks.cu, registered by _C
        register_kernels(_op, ["cpu", "cuda"] if has_cuda_kernels() else ["cpu"])
