"""The backend switch: "fast" (fused kernels, the default) or "reference" (plain PyTorch).

The only module-level mutable state of the package. ``set_backend("reference")`` makes every
model and loss run the original math; ``with backend("reference"): ...`` does so for a block.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Literal

BackendName = Literal["fast", "reference"]
BACKENDS: tuple[str, ...] = ("fast", "reference")

_backend: str = "fast"


def get_backend() -> str:
    """The active backend name."""
    return _backend


def set_backend(name: BackendName) -> None:
    """Select ``"fast"`` or ``"reference"`` for every model and loss of the package."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {name!r}")
    _backend = name


@contextlib.contextmanager
def backend(name: BackendName) -> Iterator[None]:
    """Context manager: run the block with backend ``name``, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)
