"""GLU over the channel dim as a custom op: ``x (N, 2C, *) -> x[:, :C] * sigmoid(x[:, C:]) (N, C, *)``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .._extension import has_cuda_kernels, has_extension
from ._dispatch import register_devices, use_fast


def check_glu_input(x: torch.Tensor, name: str = "x") -> None:
    """ValueError/TypeError naming ``name`` unless x is a float tensor (N, 2C, *)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {getattr(x, 'dtype', type(x).__name__)}")
    if x.dim() < 2:
        raise ValueError(f"{name}: expected shape (N, 2C, ...), got {tuple(x.shape)}")
    if x.shape[1] % 2:
        raise ValueError(f"{name}: expected an even channel count (N, 2C, ...), got {x.shape[1]} in {tuple(x.shape)}")


def glu(x: torch.Tensor) -> torch.Tensor:
    """GLU over dim 1. x: (N, 2C, *) -> (N, C, *)."""
    check_glu_input(x)
    if use_fast("glu", x):
        return torch.ops.attngan_fast.glu(x)
    return F.glu(x, 1)


if has_extension():

    @torch.library.register_fake("attngan_fast::glu")
    def _glu_fake(x: torch.Tensor) -> torch.Tensor:
        shape = list(x.shape)
        shape[1] //= 2
        return x.new_empty(shape)

    @torch.library.register_fake("attngan_fast::glu_backward")
    def _glu_backward_fake(grad_out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    def _glu_setup_context(ctx, inputs, output) -> None:
        (x,) = inputs
        ctx.save_for_backward(x)

    def _glu_backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.ops.attngan_fast.glu_backward(grad_out, x)

    torch.library.register_autograd("attngan_fast::glu", _glu_backward, setup_context=_glu_setup_context)
    register_devices("glu", {"cpu", "cuda"} if has_cuda_kernels() else {"cpu"})
