"""The one fallback policy of the ops: run the fused kernel, or the reference twin, per call.

Each op module registers, per device type, that a kernel exists and the inputs it cannot take
(:class:`Limit`: more than 64 words, float64, ...). :func:`use_kernel` then answers, for the op's
inputs, whether the kernel runs: the backend is "fast", the device has a kernel, and no limit is
exceeded. Otherwise the op runs its reference (``attngan_fast.reference``), with a one-time warning
per (op, device) for a missing kernel and per (op, device, limit) for an exceeded limit.

Registering Triton kernels (:func:`register_triton`) never raises: an exception while importing
or registering them is one warning, and CUDA tensors of that op run the reference.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import torch

from .._extension import has_extension
from ..backend import get_backend

__all__ = ["Limit", "kernel_devices", "kernel_limits", "register_kernels", "register_triton", "second_order_backward",
           "use_kernel"]


class Limit(NamedTuple):
    """An input a device's kernel cannot take: ``fits(*inputs)`` is False for it; ``what`` names the
    limit in the warning (e.g. ``"at most 64 words (T <= 64)"``). ``quiet``: a limit chosen for speed
    (the reference is as fast or faster there): no warning, nothing for torch.compile to break on."""

    what: str
    fits: Callable[..., bool]
    quiet: bool = False


_kernels: dict[str, dict[str, tuple[Limit, ...]]] = {}  # op -> device type -> limits of its kernel
_warned: set[tuple[str, ...]] = set()


def register_kernels(op: str, device_types: Iterable[str], limits: Sequence[Limit] = ()) -> None:
    """Record that ``attngan_fast::op`` has a kernel for each of ``device_types``, taking inputs within ``limits``."""
    for device in device_types:
        _kernels.setdefault(op, {})[device] = tuple(limits)


def kernel_devices(op: str) -> frozenset[str]:
    """Device types with a fused kernel for ``op`` in this build."""
    return frozenset(_kernels.get(op, {}))


def kernel_limits(op: str, device_type: str) -> tuple[Limit, ...]:
    """The limits of ``op``'s kernel for ``device_type`` (empty without a kernel)."""
    return _kernels.get(op, {}).get(device_type, ())


def _warn_once(key: tuple[str, ...], message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def use_kernel(op: str, x: torch.Tensor, *inputs: Any) -> bool:
    """True when the backend is "fast", ``op`` has a kernel for ``x``'s device and ``(x, *inputs)`` are
    within its limits.

    ``x`` is the op's first input (its device picks the kernel); the limits see ``(x, *inputs)``.
    """
    if get_backend() != "fast":
        return False
    device = x.device.type
    kernels = _kernels.get(op, {})
    if device not in kernels:
        why = "the compiled extension is missing" if not has_extension() else f"no {device} kernel"
        _warn_once((op, device), f"attngan_fast.{op}: {why}; using the reference implementation")
        return False
    for limit in kernels[device]:
        if not limit.fits(x, *inputs):
            if limit.quiet:
                return False
            _warn_once((op, device, limit.what),
                       f"attngan_fast.{op}: the {device} kernel takes {limit.what}; using the reference implementation")
            return False
    return True


def register_triton(op: str, register: Callable[[], Sequence[Limit]]) -> None:
    """Register ``op``'s Triton kernels for "cuda" when a GPU is visible.

    ``register()`` imports the kernels, registers them with ``torch.library`` and returns their
    limits. Any exception there becomes one warning; CUDA tensors of ``op`` then run the reference
    (without a second warning at the first call).
    """
    if not torch.cuda.is_available():
        return
    try:
        limits = register()
    except Exception as e:  # a broken Triton install must not break `import attngan_fast`
        _warned.add((op, "cuda"))
        warnings.warn(f"attngan_fast.{op}: the Triton kernels could not be registered ({type(e).__name__}: {e}); "
                      "CUDA tensors use the reference implementation", RuntimeWarning, stacklevel=2)
        return
    register_kernels(op, ["cuda"], limits)


def second_order_backward(reference: Callable[..., Any], inputs: Sequence[Any], grad_outputs: Sequence[Any],
                          needs_grad: Sequence[bool]) -> tuple[Any, ...]:
    """The backward of a fused op when its gradient is itself differentiated (``create_graph=True``:
    the backward runs with grad mode on): the vector-Jacobian product of the op's ``reference`` at the
    saved ``inputs``, built with autograd so that it has the true second derivative. The fused kernels'
    backwards are not differentiable; this is the path of gradient penalties and ``gradgradcheck``.

    reference(*inputs) -> a tensor or a tuple of tensors matching ``grad_outputs`` (None: no gradient
    flows into that output); returns one gradient (or None) per input, where ``needs_grad``.
    """
    outputs = reference(*inputs)
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if g is not None and o.requires_grad]
    wanted = [i for i, (x, need) in enumerate(zip(inputs, needs_grad))
              if need and isinstance(x, torch.Tensor) and x.requires_grad]
    grads: list[Any] = [None] * len(inputs)
    if pairs and wanted:
        found = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                                    create_graph=True, allow_unused=True)
        for i, g in zip(wanted, found):
            grads[i] = g if g is not None else torch.zeros_like(inputs[i])
    return tuple(grads)
