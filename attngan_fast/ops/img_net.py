"""G's last layer (GET_IMAGE_G's ``img``: conv3x3 -> 3 channels, no bias -> tanh) as one op.

- ``img_conv_tanh(x, weight)``: tanh(conv3x3(x, weight, padding 1)), the tanh in place on the conv
  output. Backward in one elementwise pass, ``dz = g * (1 - out^2)``, then the input gradient as a
  *forward* convolution of dz with the flipped, transposed weight (3 -> Ci channels, padding 1)
  instead of the convolution's backward-data, which oneDNN runs slowly for 3 output channels; the
  weight gradient is the convolution's own. GET_IMAGE_G fwd+bwd, one thread: 1.19x (demo_birds,
  B 8, 8 -> 3 at 64 px), 1.29x (128 px), 1.11x (bird_attn2's 32 -> 3 at 256 px, B 8).

Semantics: the twin :func:`attngan_fast.reference.img_conv_tanh`. The kernel is ATen composition,
so it runs on CPU and CUDA tensors alike (on a GPU the gain is the in-place tanh and the one
elementwise backward pass; not measured there, no GPU was lent).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import reference
from .blocks import _autocast, _check_weight, _check_x
from .dispatch import register_kernels, second_order_backward, use_kernel

__all__ = ["check_img_conv_tanh_inputs", "img_conv_tanh"]


def check_img_conv_tanh_inputs(x: Tensor, weight: Tensor) -> None:
    """TypeError/ValueError naming the argument unless x (N, Ci, H, W) and weight (Co, Ci, 3, 3) agree."""
    _check_x(x)
    _check_weight(x, weight, "weight")


def img_conv_tanh(x: Tensor, weight: Tensor) -> Tensor:
    """tanh(conv3x3(x, weight)) (padding 1, no bias). x: (N, Ci, H, W), weight: (Co, Ci, 3, 3) ->
    (N, Co, H, W). Under autocast the conv runs in autocast's dtype, as F.conv2d would."""
    xc, wc = _autocast(x, weight)
    check_img_conv_tanh_inputs(xc, wc)
    if not use_kernel("img_conv_tanh", xc):
        return reference.img_conv_tanh(xc, wc)
    return torch.ops.attngan_fast.img_conv_tanh(xc, wc)


# ---- the op, its fake, autograd -----------------------------------------------------------------


@torch.library.custom_op("attngan_fast::img_conv_tanh", mutates_args=())
def _img_conv_tanh(x: Tensor, weight: Tensor) -> Tensor:
    with torch.autocast(x.device.type, enabled=False):
        return F.conv2d(x, weight, padding=1).tanh_().contiguous(memory_format=_format(x))


@torch.library.custom_op("attngan_fast::img_conv_tanh_backward", mutates_args=())
def _img_conv_tanh_backward(grad_out: Tensor, x: Tensor, weight: Tensor, out: Tensor, need_x: bool,
                            need_w: bool) -> tuple[Tensor, Tensor]:
    with torch.autocast(x.device.type, enabled=False):
        dz = torch.addcmul(grad_out, grad_out * out, out, value=-1.0)  # g * (1 - out^2)
        grad_x = (F.conv2d(dz, weight.flip(2, 3).transpose(0, 1), padding=1).contiguous(
            memory_format=_format(x)) if need_x else x.new_empty((0,)))
        grad_w = (torch.ops.aten.convolution_backward(dz, x, weight, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                                      [False, True, False])[1].contiguous() if need_w
                  else weight.new_empty((0,)))
    return grad_x, grad_w


def _format(x: Tensor) -> torch.memory_format:
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


@_img_conv_tanh.register_fake
def _img_conv_tanh_fake(x, weight):
    n, _, h, w = x.shape
    return torch.empty((n, weight.shape[0], h, w), dtype=x.dtype, device=x.device, memory_format=_format(x))


@_img_conv_tanh_backward.register_fake
def _img_conv_tanh_backward_fake(grad_out, x, weight, out, need_x, need_w):
    grad_x = torch.empty_like(x, memory_format=_format(x)) if need_x else x.new_empty((0,))
    grad_w = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_w else weight.new_empty((0,))
    return grad_x, grad_w


def _img_conv_tanh_setup_context(ctx, inputs, output) -> None:
    x, weight = inputs
    ctx.save_for_backward(x, weight, output)


def _img_conv_tanh_grad(ctx, grad_out):
    x, weight, out = ctx.saved_tensors
    if torch.is_grad_enabled():  # a second derivative is asked for: the reference's
        return second_order_backward(reference.img_conv_tanh, (x, weight), (grad_out,), ctx.needs_input_grad)
    need_x, need_w = ctx.needs_input_grad
    grad_x, grad_w = torch.ops.attngan_fast.img_conv_tanh_backward(grad_out, x, weight, out, need_x, need_w)
    return grad_x if need_x else None, grad_w if need_w else None


_img_conv_tanh.register_autograd(_img_conv_tanh_grad, setup_context=_img_conv_tanh_setup_context)
register_kernels("img_conv_tanh", ["cpu", "cuda"])
