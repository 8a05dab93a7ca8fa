"""Comparison helpers shared by the kernel tests (fast op vs reference)."""
from __future__ import annotations

import torch

# dtype -> (atol, rtol) for fast-vs-reference comparisons at the same dtype
TOLERANCES = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (1e-5, 1e-5),
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (2e-2, 2e-2),
}


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype | None = None, name: str = "") -> None:
    """torch.testing.assert_close with the tolerance of ``dtype`` (default: expected's dtype)."""
    atol, rtol = TOLERANCES[dtype or expected.dtype]
    torch.testing.assert_close(actual.to(expected.dtype), expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def assert_low_precision_ok(fast: torch.Tensor, plain: torch.Tensor, exact: torch.Tensor, name: str = "",
                            factor: float = 2.0, atol: float = 1e-3) -> None:
    """The flash-attention rule for fp16/bf16: the fast op's error against an fp32/fp64 reference
    is at most ``factor`` times the error of plain PyTorch run in the low precision (plus atol)."""
    exact = exact.double()
    err_fast = (fast.double() - exact).abs().max().item()
    err_plain = (plain.double() - exact).abs().max().item()
    assert err_fast <= factor * err_plain + atol, (
        f"{name}: fast error {err_fast:.3g} > {factor} x plain error {err_plain:.3g} + {atol}")


def poisoned_like(t: torch.Tensor) -> torch.Tensor:
    """A tensor like ``t`` filled with NaN: pass as an output buffer so an unwritten element fails."""
    return torch.full_like(t, float("nan"))
