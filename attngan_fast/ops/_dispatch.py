"""Choosing between a fused op and its reference, per call.

Each op module registers which device types have a fused kernel (``register_devices``); ``use_fast``
then answers, for a tensor, whether the fused op runs. A device without a kernel (or a build
without ``_C``) falls back to the reference with a one-time warning per (op, device).
"""
from __future__ import annotations

import warnings

import torch

from .._extension import has_extension
from ..backend import get_backend

_devices: dict[str, frozenset[str]] = {}
_warned: set[tuple[str, str]] = set()


def register_devices(op: str, device_types: set[str] | frozenset[str]) -> None:
    """Record the device types (``"cpu"``, ``"cuda"``) on which ``attngan_fast::op`` has a kernel."""
    _devices[op] = frozenset(device_types)


def fast_devices(op: str) -> frozenset[str]:
    """Device types with a fused kernel for ``op`` in this build."""
    return _devices.get(op, frozenset())


def use_fast(op: str, x: torch.Tensor) -> bool:
    """True when the backend is "fast" and ``op`` has a kernel for ``x``'s device."""
    if get_backend() != "fast":
        return False
    device = x.device.type
    if device in _devices.get(op, ()):
        return True
    if (op, device) not in _warned:
        _warned.add((op, device))
        why = "the compiled extension is missing" if not has_extension() else f"no {device} kernel"
        warnings.warn(f"attngan_fast.{op}: {why}; using the reference implementation", RuntimeWarning, stacklevel=3)
    return False
