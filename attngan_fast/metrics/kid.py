"""Kernel Inception Distance (Bińkowski et al., 2018), next to FID (docs/metrics.md).

The squared MMD between two feature sets under the polynomial kernel ``k(x, y) = (x.y / d + 1)^3``
(d the feature dimension), estimated without bias (the diagonal terms left out of the within-set
means), so that its expectation is 0 for two samples of one distribution at any sample count
(FID's estimate is biased upwards at small counts). Both sets are split into ``subsets`` disjoint
random blocks (seeded); KID is the mean of the per-block estimates and its standard error their
std (ddof 1) / sqrt(subsets); the blocks are independent, so the error is a proper one.
"""
from __future__ import annotations

import numpy as np

__all__ = ["polynomial_kernel", "mmd2_unbiased", "kernel_inception_distance"]


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``(x y^T / d + 1)^3`` of features (N, d) and (M, d) -> (N, M)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD of features x (m >= 2, d) and y (n >= 2, d) under :func:`polynomial_kernel`."""
    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    within_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    within_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * kxy.mean())


def kernel_inception_distance(
    features1: np.ndarray, features2: np.ndarray, subsets: int = 10, seed: int = 0
) -> tuple[float, float]:
    """KID (mean over ``subsets`` disjoint blocks) and its standard error, of features (N1, D), (N2, D)."""
    a = np.asarray(features1, dtype=np.float64)
    b = np.asarray(features2, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features: expected (N1, D) and (N2, D), got {a.shape} and {b.shape}")
    if subsets < 2:
        raise ValueError(f"subsets: expected >= 2 (for a standard error), got {subsets}")
    if min(len(a), len(b)) < 2 * subsets:
        raise ValueError(f"features: KID with {subsets} subsets needs >= {2 * subsets} samples per set, "
                         f"got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    pa, pb = rng.permutation(len(a)), rng.permutation(len(b))
    ma, mb = len(a) // subsets, len(b) // subsets
    values = np.array([mmd2_unbiased(a[pa[i * ma:(i + 1) * ma]], b[pb[i * mb:(i + 1) * mb]])
                       for i in range(subsets)])
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(subsets))
