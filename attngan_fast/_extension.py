"""Loading the compiled extension ``attngan_fast._C`` and describing what was built.

The package imports without ``_C`` (a failed or skipped build): one warning, then every op runs
its pure-PyTorch reference.
"""
from __future__ import annotations

import importlib
import warnings
from types import ModuleType
from typing import Any

import torch

from ._version import __version__


def _load() -> tuple[ModuleType | None, str]:
    try:
        return importlib.import_module("attngan_fast._C"), ""
    except ImportError as e:  # not built, or built against another torch
        return None, str(e)


_C, _C_ERROR = _load()
if _C is None:
    warnings.warn(
        f"attngan_fast: the compiled extension attngan_fast._C could not be loaded ({_C_ERROR}); "
        "every op uses its pure-PyTorch reference. Rebuild with `pip install -e . --no-build-isolation`.",
        RuntimeWarning,
        stacklevel=2,
    )


def has_extension() -> bool:
    """True when ``attngan_fast._C`` loaded (its schemas and C++ kernels are registered)."""
    return _C is not None


def has_cuda_kernels() -> bool:
    """True when ``_C`` was built with its CUDA sources."""
    return bool(getattr(_C, "with_cuda", 0))


def triton_version() -> str | None:
    """The importable Triton's version, or None."""
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


def extension_info() -> dict[str, Any]:
    """What was built and what can run here.

    Keys: ``version``, ``torch``, ``cpu`` (C++ kernels built), ``cuda`` (CUDA sources built),
    ``cuda_archs`` (list such as ``["9.0"]``), ``triton`` (version or None), ``cuda_available``
    (a GPU is visible now), ``error`` (why ``_C`` failed to load, or "").
    """
    archs = getattr(_C, "cuda_archs", "") if _C is not None else ""
    return {
        "version": __version__,
        "torch": torch.__version__,
        "cpu": _C is not None,
        "cuda": has_cuda_kernels(),
        "cuda_archs": [a for a in archs.split(";") if a],
        "triton": triton_version(),
        "cuda_available": torch.cuda.is_available(),
        "error": _C_ERROR,
    }
