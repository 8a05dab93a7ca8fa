"""Input checks of every op and loss, and the format of their errors: ``<argument>: expected <what>, got <what>``.

Only Python comparisons of shapes, dtypes and devices: no device sync, traceable by torch.compile.
Wrong types and dtypes raise ``TypeError``, wrong shapes, values and devices ``ValueError``.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence, Union

from torch import Tensor

__all__ = ["check_float_tensor", "check_like", "check_shape", "describe"]


def describe(x: Any) -> str:
    """What an argument is, for a message: a tensor's dtype, else the type's name."""
    return str(x.dtype) if isinstance(x, Tensor) else type(x).__name__


def check_shape(
    name: str,
    x: Tensor,
    expected: Sequence[Union[int, str]],
    sizes: Optional[dict[str, int]] = None,
) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected``.

    ``expected`` holds ints (exact sizes) and symbols (str, any size). With ``sizes``, a symbol
    seen for the first time is bound to the size found, and later uses must match it; the
    message then shows the bound value, e.g. ``"word_embs: expected (B=2, 256, T), got (2, 128, 5)"``.
    """
    shape = tuple(x.shape)
    bound = {} if sizes is None else dict(sizes)
    ok = len(shape) == len(expected)
    if ok:
        for dim, want in zip(shape, expected):
            if isinstance(want, str):
                if sizes is not None and bound.setdefault(want, dim) != dim:
                    ok = False
            elif dim != want:
                ok = False
    if not ok:
        raise ValueError(f"{name}: expected ({_format_expected(expected, sizes)}), got {shape}")
    if sizes is not None:
        sizes.update(bound)


def _format_expected(expected: Sequence[Union[int, str]], sizes: Optional[Mapping[str, int]]) -> str:
    parts = []
    for want in expected:
        if isinstance(want, str) and sizes is not None and want in sizes:
            parts.append(f"{want}={sizes[want]}")
        else:
            parts.append(str(want))
    return parts[0] + "," if len(parts) == 1 else ", ".join(parts)


def check_float_tensor(name: str, x: Any, layout: str = "") -> None:
    """``TypeError`` unless x is a floating-point tensor; ``layout`` (e.g. ``"(B, D, T)"``) goes in the message."""
    if not isinstance(x, Tensor) or not x.is_floating_point():
        what = f"a floating-point tensor {layout}" if layout else "a floating-point tensor"
        raise TypeError(f"{name}: expected {what}, got {describe(x)}")


def check_like(name: str, x: Any, like_name: str, like: Tensor, dtype: bool = True) -> None:
    """``TypeError`` unless x is a tensor of ``like``'s dtype (when ``dtype``), ``ValueError`` unless on its device."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a tensor, got {describe(x)}")
    if dtype and x.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype} (that of {like_name}), got {x.dtype}")
    if x.device != like.device:
        raise ValueError(f"{name}: expected device {like.device} (that of {like_name}), got {x.device}")

