"""R-precision on constructed cases with known answers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from attngan_fast.data import SyntheticBirds
from attngan_fast.metrics.r_precision import (
    dataset_r_precision,
    fold_statistics,
    r_precision,
    r_precision_hits,
    sample_mismatched,
)


def test_sample_mismatched_never_picks_the_same_class():
    rng = np.random.default_rng(0)
    classes = np.array([0, 1, 2, 0, 1])
    pool_classes = np.repeat(np.arange(4), 5)
    idx = sample_mismatched(classes, pool_classes, 99, rng=rng)
    assert idx.shape == (5, 99)
    assert all((pool_classes[idx[i]] != classes[i]).all() for i in range(5))
    assert len(np.unique(idx[0])) > 10  # random, spread over the other classes
    with pytest.raises(ValueError, match="no caption of a class other than 7"):
        sample_mismatched([7], [7, 7], 3, rng=rng)


def test_hits_known_answers():
    torch.manual_seed(0)
    n, k, d = 8, 99, 16
    img = torch.randn(n, d)
    mismatched = torch.randn(n, k, d)
    mismatched -= (mismatched @ img[:, :, None]) / (img.norm(dim=1) ** 2)[:, None, None] * img[:, None, :]  # ⟂ img
    assert r_precision_hits(img, 2.5 * img, mismatched).all()  # cos 1 vs cos 0
    assert not r_precision_hits(img, -img, mismatched).any()  # cos -1 vs cos 0
    assert not r_precision_hits(img, img, torch.stack([img] * k, 1)).any()  # ties are misses
    true = img.clone()
    true[::2] = -img[::2]
    assert r_precision_hits(img, true, mismatched).tolist() == [False, True] * 4
    assert r_precision_hits(img, true, mismatched, chunk=3).tolist() == [False, True] * 4
    with pytest.raises(ValueError, match="mismatched_codes"):
        r_precision_hits(img, img, mismatched[:, :, :3])


def test_fold_statistics_known_answers():
    rng = np.random.default_rng(0)
    assert fold_statistics(np.ones(30, bool), 10, rng=rng) == (100.0, 0.0, [100.0] * 10)
    hits = np.zeros(100, bool)
    hits[:37] = True
    mean, std, folds = fold_statistics(hits, 10, rng=rng)
    assert mean == pytest.approx(37.0) and std == pytest.approx(np.std(folds)) and len(folds) == 10
    with pytest.raises(ValueError, match="cannot fill 10 folds"):
        fold_statistics(np.ones(5, bool), 10, rng=rng)


def test_r_precision_one_hot_codes():
    # images and captions coded by class one-hot: the true caption has cos 1, every mismatch cos 0
    classes = np.arange(200) % 20
    codes = torch.eye(20)[classes]
    result = r_precision(codes, codes, classes, codes, classes, seed=0)
    assert (result.mean, result.std) == (100.0, 0.0) and result.hits.all()
    # captions of the neighbouring class: the true caption is never better than a mismatch
    wrong = torch.eye(20)[(classes + 1) % 20]
    assert r_precision(codes, wrong, classes, codes, classes, seed=0).mean == 0.0
    # half the images get their true caption right: 50 %
    half = torch.where(torch.from_numpy(classes < 10)[:, None], codes, wrong)
    result = r_precision(codes, half, classes, codes, classes, seed=0)
    assert result.mean == pytest.approx(50.0) and str(result).endswith("%")
    assert result.to_dict()["num_images"] == 200


class _ClassFromPixels(nn.Module):
    """Image encoder oracle: one-hot of the class encoded in the image's mean pixel value."""

    def __init__(self, nclass: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.nclass = nclass

    def forward(self, x):
        cls = ((x.mean(dim=(1, 2, 3)) + 1) * 50).round().long()
        return None, torch.eye(self.nclass)[cls]


class _ClassFromCaption(nn.Module):
    """Text encoder oracle: one-hot of the class of the image a caption belongs to."""

    def __init__(self, dataset, nclass: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.table = {tuple(c): int(k) for caps, k in zip(dataset.captions, dataset.class_ids) for c in caps}
        self.nclass = nclass

    def forward(self, captions, cap_lens):
        classes = [self.table[tuple(row[:n])] for row, n in zip(captions.tolist(), cap_lens.tolist())]
        return None, torch.eye(self.nclass)[classes]


def test_dataset_r_precision_with_oracle_encoders():
    ds = SyntheticBirds("test", num_images=500, test_fraction=0.2, data_seed=0, seed=0, base_size=16)
    text = _ClassFromCaption(ds, 101)
    # images replaced by constant images whose mean pixel encodes the class id
    images = torch.stack([torch.full((3, 16, 16), c / 50.0 - 1) for c in ds.class_ids.tolist()])
    image = _ClassFromPixels(101)
    result = dataset_r_precision(text, image, ds, images=images, seed=0)
    assert result.mean == 100.0
    shuffled = images[torch.randperm(len(images), generator=torch.Generator().manual_seed(0))]
    result = dataset_r_precision(text, image, ds, images=shuffled, seed=0)
    same = (ds.class_ids[torch.randperm(len(images), generator=torch.Generator().manual_seed(0)).numpy()] == ds.class_ids)
    assert result.hits.tolist() == same.tolist()  # a hit exactly where the shuffled image has the right class
    with pytest.raises(ValueError, match="expected 100 images"):
        dataset_r_precision(text, image, ds, images=images[:5])
