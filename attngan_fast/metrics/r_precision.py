"""R-precision, the protocol of DM-GAN's released evaluation (docs/original_attngan.md §11).

For each image: its true caption and ``num_mismatched`` (99) captions of random images of a
*different class* (one random caption each, drawn with replacement), ranked by the cosine of the
DAMSM global image code (``cnn_code``) and the sentence embeddings. A hit is the true caption
scoring strictly above all mismatched ones (a tie is a miss). The hits are shuffled into ``folds``
(10) folds; the result is the mean ± std (numpy's, ddof=0) of the per-fold hit rates, in percent.
Departure: DM-GAN's fold slices drop the last element of each fold; here every image counts.

Codes of captions are computed once per caption (in eval mode the text encoder is deterministic),
which is what DM-GAN's per-batch encoding of the same captions computes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor

from ..losses import cosine_similarity

__all__ = ["RPrecision", "sample_mismatched", "r_precision_hits", "fold_statistics", "r_precision",
           "encode_captions", "encode_images", "dataset_r_precision"]

ArrayLike = Union[np.ndarray, Tensor, list]


@dataclass(frozen=True)
class RPrecision:
    """mean ± std over folds (percent), the per-fold values and the per-image hits."""

    mean: float
    std: float
    folds: list[float]
    hits: np.ndarray = field(repr=False)

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.std:.2f} %"

    def to_dict(self) -> dict:
        """JSON-ready summary."""
        return {"mean": self.mean, "std": self.std, "folds": self.folds, "num_images": int(len(self.hits)),
                "hit_rate": float(np.mean(self.hits) * 100.0) if len(self.hits) else float("nan")}


def sample_mismatched(
    class_ids: ArrayLike, pool_class_ids: ArrayLike, num: int = 99, *, rng: np.random.Generator
) -> np.ndarray:
    """(N, num) indices into the pool, each of a caption whose class differs from ``class_ids[i]``.

    Uniform with replacement over the pool entries of other classes; ``ValueError`` if an image
    has none.
    """
    class_ids = np.asarray(class_ids).reshape(-1)
    pool_class_ids = np.asarray(pool_class_ids).reshape(-1)
    out = np.empty((len(class_ids), num), dtype=np.int64)
    for cls in np.unique(class_ids):
        rows = np.flatnonzero(class_ids == cls)
        candidates = np.flatnonzero(pool_class_ids != cls)
        if len(candidates) == 0:
            raise ValueError(f"R-precision: no caption of a class other than {cls} to mismatch with")
        out[rows] = candidates[rng.integers(len(candidates), size=(len(rows), num))]
    return out


def r_precision_hits(
    image_codes: Tensor, true_codes: Tensor, mismatched_codes: Tensor, chunk: int = 1024
) -> np.ndarray:
    """(N,) bool: cos(image, true caption) > cos(image, every mismatched caption).

    image_codes: (N, D); true_codes: (N, D); mismatched_codes: (N, K, D) (K = 99 in the protocol).
    The cosine is the DAMSM one (``losses.cosine_similarity``, eps on the product of norms).
    """
    n, d = image_codes.shape
    if true_codes.shape != (n, d) or mismatched_codes.dim() != 3 or mismatched_codes.shape[0::2] != (n, d):
        raise ValueError(f"expected image_codes (N, D), true_codes (N, D), mismatched_codes (N, K, D); got "
                         f"{tuple(image_codes.shape)}, {tuple(true_codes.shape)}, {tuple(mismatched_codes.shape)}")
    hits = []
    for start in range(0, n, chunk):
        img = image_codes[start:start + chunk].float()
        texts = torch.cat([true_codes[start:start + chunk, None], mismatched_codes[start:start + chunk]], 1).float()
        scores = cosine_similarity(img[:, None, :].expand_as(texts), texts, dim=2).reshape(len(img), -1)
        hits.append((scores[:, 0] > scores[:, 1:].max(dim=1).values).cpu().numpy())
    return np.concatenate(hits) if hits else np.zeros(0, dtype=bool)


def fold_statistics(hits: np.ndarray, folds: int = 10, *, rng: np.random.Generator) -> tuple[float, float, list[float]]:
    """Shuffle ``hits`` into ``folds`` folds (sizes differ by at most 1): mean, std (ddof=0), per fold, in %."""
    if len(hits) < folds:
        raise ValueError(f"R-precision: {len(hits)} images cannot fill {folds} folds")
    parts = np.array_split(rng.permutation(np.asarray(hits, dtype=np.float64)), folds)
    values = [float(p.mean() * 100.0) for p in parts]
    return float(np.mean(values)), float(np.std(values)), values


def r_precision(
    image_codes: Tensor,
    true_codes: Tensor,
    class_ids: ArrayLike,
    pool_codes: Tensor,
    pool_class_ids: ArrayLike,
    *,
    num_mismatched: int = 99,
    folds: int = 10,
    seed: int = 0,
) -> RPrecision:
    """R-precision (R = 1) of N images against their true captions and mismatched pool captions.

    image_codes: (N, D) global image codes; true_codes: (N, D) sentence codes of each image's true
    caption; class_ids: (N,); pool_codes: (M, D) sentence codes of the captions to draw mismatches
    from (normally every caption of the test split) with their classes pool_class_ids (M,).
    """
    rng = np.random.default_rng(seed)
    index = torch.from_numpy(sample_mismatched(class_ids, pool_class_ids, num_mismatched, rng=rng))
    hits = r_precision_hits(image_codes, true_codes, pool_codes[index.to(pool_codes.device)])
    mean, std, values = fold_statistics(hits, folds, rng=rng)
    return RPrecision(mean, std, values, hits)


@torch.no_grad()
def encode_captions(
    text_encoder: nn.Module, captions: Tensor, cap_lens: Tensor, batch_size: int = 256
) -> Tensor:
    """Sentence codes (M, E) of padded captions (M, L) int64 with lengths (M,), in batches.

    The encoder is used as given (put it in eval mode first for deterministic codes).
    """
    device = next(text_encoder.parameters()).device
    out = []
    for start in range(0, len(captions), batch_size):
        caps = captions[start:start + batch_size].to(device)
        lens = cap_lens[start:start + batch_size]
        out.append(text_encoder(caps[:, : int(lens.max())], lens)[1].float())
    return torch.cat(out)


@torch.no_grad()
def encode_images(image_encoder: nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """Global image codes (N, E) of images (N, 3, H, W) in [-1, 1], in batches."""
    device = next(image_encoder.parameters()).device
    return torch.cat([image_encoder(images[s:s + batch_size].to(device))[1].float()
                      for s in range(0, len(images), batch_size)])


@torch.no_grad()
def dataset_r_precision(
    text_encoder: nn.Module,
    image_encoder: nn.Module,
    dataset,
    *,
    images: Optional[Tensor] = None,
    num_mismatched: int = 99,
    folds: int = 10,
    seed: int = 0,
    batch_size: int = 64,
) -> RPrecision:
    """R-precision of a caption dataset's images (or of ``images`` generated for its captions).

    For image k: its true caption is the one :meth:`CaptionDataset.__getitem__` draws (epoch 0 of
    ``dataset.seed``), the pool is every caption of the dataset. ``images`` (N, 3, H, W), when
    given, replaces the dataset's images (e.g. generated from those true captions). Both
    encoders are switched to eval mode (and back afterwards).
    """
    modes = (text_encoder.training, image_encoder.training)
    text_encoder.eval()
    image_encoder.eval()
    try:
        dataset.set_epoch(0)
        if images is not None and len(images) != len(dataset):
            raise ValueError(f"images: expected {len(dataset)} images (one per dataset item), got {len(images)}")
        image_codes, captions, cap_lens, class_ids = [], [], [], []
        for start in range(0, len(dataset), batch_size):
            samples = [dataset[k] for k in range(start, min(start + batch_size, len(dataset)))]
            batch = torch.stack([s.imgs[-1] for s in samples]) if images is None else images[start:start + batch_size]
            image_codes.append(encode_images(image_encoder, batch, batch_size))
            captions += [s.caption for s in samples]
            cap_lens += [s.cap_len for s in samples]
            class_ids += [s.class_id for s in samples]
        true_codes = encode_captions(text_encoder, torch.stack(captions), torch.tensor(cap_lens))
        pool_caps, pool_lens, _, pool_classes = dataset.caption_pool(np.random.default_rng(seed))
        pool_codes = encode_captions(text_encoder, pool_caps, pool_lens)
        return r_precision(torch.cat(image_codes), true_codes, class_ids, pool_codes, pool_classes,
                           num_mismatched=num_mismatched, folds=folds, seed=seed)
    finally:
        text_encoder.train(modes[0])
        image_encoder.train(modes[1])
