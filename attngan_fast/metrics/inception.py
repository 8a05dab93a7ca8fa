"""Inception Score and FID (docs/original_attngan.md §11, docs/metrics.md) with torchvision's Inception-v3,
weights from a local file; the FID math of every protocol (:mod:`attngan_fast.metrics.fid`).

Images are (N, 3, H, W) in [-1, 1] (the generator's range, which is also the input range of the
Google Inception weights); they are resized to 299x299 (bilinear) inside.

* Inception Score, the protocol of improved-gan / StackGAN-inception-model: softmax class
  probabilities, ``splits`` (10) contiguous parts, per part ``exp(mean_x KL(p(y|x) || p(y)))``,
  mean and std over the parts.
* FID: the 2048-d pool3 features (the average pool before ``fc``), their mean and covariance
  (ddof 1), ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` in float64. The trace of the
  square root is the sum of the square roots of the eigenvalues of ``S1^(1/2) S2 S1^(1/2)`` (a
  symmetric PSD matrix with the eigenvalues of S1 S2): two ``eigh`` calls, no SciPy. Eigenvalues
below rounding level (``max * D * eps``) count as 0, so singular covariances (fewer samples than
dimensions) give FID(X, X) = 0 to rounding instead of a sum of D square roots of noise. From
features with fewer samples than dimensions, :func:`fid_from_features` takes an exact shortcut
(singular values of an N1 x N2 matrix) instead of the D x D decompositions.

The numbers depend on the weights: CUB papers use an Inception fine-tuned on CUB, COCO papers the
ImageNet one (TensorFlow's); FID papers use the TF "pt_inception" weights. Any torchvision-format
Inception-v3 state_dict works here (the class count is read from ``fc.weight``).
"""
from __future__ import annotations

import os
import warnings
from typing import Iterable, Optional, Union

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torchvision.models import inception_v3

from ..io import load_module_state
from ..models.encoders import INCEPTION_EXPECTED, load_inception_weights

__all__ = [
    "InceptionV3",
    "inception_outputs",
    "inception_score",
    "feature_statistics",
    "frechet_distance",
    "fid_from_features",
    "psd_sqrt",
    "trace_sqrt_product",
]

PathLike = Union[str, os.PathLike]


class InceptionV3(nn.Module):
    """torchvision Inception-v3 returning (pool3 features (N, 2048), logits (N, num_classes)).

    weights: a torchvision-format state_dict file (``AuxLogits.*`` ignored); nothing is downloaded.
    None gives random weights with a warning (for tests).
    """

    def __init__(self, weights: Optional[PathLike] = None) -> None:
        super().__init__()
        state = None
        num_classes = 1000
        if weights is not None:
            state = load_inception_weights(weights)
            num_classes = state["fc.weight"].shape[0]
        else:
            warnings.warn("InceptionV3: no weights file, the network is randomly initialised (scores are "
                          "meaningless except for tests)", stacklevel=2)
        self.net = inception_v3(weights=None, aux_logits=False, transform_input=False, init_weights=False,
                                num_classes=num_classes)
        if state is not None:
            load_module_state(self.net, state, weights, INCEPTION_EXPECTED)
        self.net.eval()
        self._pool: Optional[Tensor] = None
        self.net.avgpool.register_forward_hook(self._keep_pool)

    def _keep_pool(self, module: nn.Module, inputs: tuple, output: Tensor) -> None:
        self._pool = output

    def train(self, mode: bool = True) -> "InceptionV3":
        """Always eval: BatchNorm with running statistics, no dropout."""
        return super().train(False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images: (N, 3, H, W) in [-1, 1] -> pool3 (N, 2048), logits (N, num_classes)."""
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"images: expected (N, 3, H, W), got {tuple(images.shape)}")
        x = F.interpolate(images.float(), size=(299, 299), mode="bilinear", align_corners=False)
        logits = self.net(x)
        pool, self._pool = self._pool.flatten(1), None
        return pool, logits


@torch.no_grad()
def inception_outputs(
    model: InceptionV3, images: Union[Tensor, Iterable[Tensor]], batch_size: int = 50
) -> tuple[np.ndarray, np.ndarray]:
    """pool3 features (N, 2048) and class probabilities (N, K), float64, of images in [-1, 1].

    images: one (N, 3, H, W) tensor or an iterable of such batches (e.g. generated on the fly).
    """
    device = next(model.parameters()).device
    batches = images.split(batch_size) if isinstance(images, Tensor) else images
    pools, probs = [], []
    for batch in batches:
        pool, logits = model(batch.to(device))
        pools.append(pool.double().cpu())
        probs.append(F.softmax(logits.double(), dim=1).cpu())
    if not pools:
        raise ValueError("inception_outputs: no images")
    return torch.cat(pools).numpy(), torch.cat(probs).numpy()


def inception_score(probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and std over ``splits`` contiguous parts of exp(E_x KL(p(y|x) || p(y))); probs: (N, K)."""
    probs = np.asarray(probs, dtype=np.float64)
    n = probs.shape[0]
    if probs.ndim != 2 or n < splits:
        raise ValueError(f"probs: expected (N >= {splits}, K), got {probs.shape}")
    scores = []
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits]
        p_y = part.mean(axis=0, keepdims=True)
        kl = part * (np.log(np.clip(part, 1e-30, None)) - np.log(np.clip(p_y, 1e-30, None)))
        scores.append(float(np.exp(kl.sum(axis=1).mean())))
    return float(np.mean(scores)), float(np.std(scores))


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (ddof 1) of features (N, D), float64."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"features: expected (N >= 2, D), got {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _rank_cut(values: Tensor) -> Tensor:
    """Eigenvalues of a PSD matrix with the ones at rounding level (and negative ones) set to 0."""
    tol = values.abs().max() * values.numel() * torch.finfo(values.dtype).eps
    return torch.where(values > tol, values, torch.zeros_like(values))


def psd_sqrt(matrix: Tensor) -> Tensor:
    """Square root (D, D) of a symmetric PSD matrix (D, D): ``V sqrt(L) V^T`` from ``eigh``, the
    eigenvalues at rounding level (or negative) cut to 0."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * _rank_cut(values).sqrt()) @ vectors.T


def trace_sqrt_product(sigma1: Tensor, sigma2: Tensor) -> Tensor:
    """``tr((S1 S2)^(1/2))`` of two covariances (D, D): the sum of the square roots of the eigenvalues
    of the symmetric PSD ``S1^(1/2) S2 S1^(1/2)`` (which has the eigenvalues of ``S1 S2``)."""
    root1 = psd_sqrt((sigma1 + sigma1.T) / 2)
    middle = root1 @ ((sigma2 + sigma2.T) / 2) @ root1
    return _rank_cut(torch.linalg.eigvalsh((middle + middle.T) / 2)).sqrt().sum()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` in float64 (see the module docstring)."""
    m1, m2 = torch.as_tensor(np.asarray(mu1), dtype=torch.float64), torch.as_tensor(np.asarray(mu2), dtype=torch.float64)
    s1 = torch.as_tensor(np.asarray(sigma1), dtype=torch.float64)
    s2 = torch.as_tensor(np.asarray(sigma2), dtype=torch.float64)
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.numel(), m1.numel()):
        raise ValueError(f"expected mu (D,) and sigma (D, D) twice, got {tuple(m1.shape)}, {tuple(s1.shape)}, "
                         f"{tuple(m2.shape)}, {tuple(s2.shape)}")
    diff = m1 - m2
    return float(diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt_product(s1, s2))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID of two feature sets (N1, D) and (N2, D).

    When a set has fewer samples than dimensions (the covariances have rank < D), the same number
    comes from the centred features ``X1``, ``X2`` (rows divided by sqrt(N - 1)) without any D x D
    decomposition: ``tr(S) = |X|_F^2`` and ``tr((S1 S2)^(1/2))`` is the sum of the singular values
    of ``X1 X2^T`` (N1 x N2; their squares are the non-zero eigenvalues of S1 S2).
    """
    a = torch.as_tensor(np.asarray(features1), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(features2), dtype=torch.float64)
    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"features: expected (N1 >= 2, D) and (N2 >= 2, D), got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(len(a), len(b)) >= a.shape[1]:
        return frechet_distance(*feature_statistics(a.numpy()), *feature_statistics(b.numpy()))
    mu1, mu2 = a.mean(0), b.mean(0)
    x1, x2 = (a - mu1) / (len(a) - 1) ** 0.5, (b - mu2) / (len(b) - 1) ** 0.5
    diff = mu1 - mu2
    tr_sqrt = torch.linalg.svdvals(x1 @ x2.T).sum()
    return float(diff @ diff + (x1 * x1).sum() + (x2 * x2).sum() - 2 * tr_sqrt)
