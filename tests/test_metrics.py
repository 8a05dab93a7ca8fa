"""Inception Score, FID (against direct numpy / SciPy computations) and the attribute classifier."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attngan_fast.metrics.attributes import (
    AttributeClassifier,
    attribute_accuracy,
    distinct_classes,
    train_attribute_classifier,
)
from attngan_fast.metrics.inception import (
    InceptionV3,
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_outputs,
    inception_score,
)


def numpy_fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID straight from the definition: eigen-decomposition of S1 S2 (real, >= 0 eigenvalues)."""
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eig = np.linalg.eigvals(s1 @ s2)
    tr_sqrt = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt)


def test_frechet_distance_matches_numpy_and_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12)) + 0.3
    value = fid_from_features(a, b)
    assert value == pytest.approx(numpy_fid(a, b), rel=1e-7)
    scipy_linalg = pytest.importorskip("scipy.linalg")
    mu1, s1 = feature_statistics(a)
    mu2, s2 = feature_statistics(b)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert value == pytest.approx(reference, rel=1e-6)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_singular_covariances():
    """Fewer samples than dimensions (the usual small-set case): no NaN, FID(X, X) == 0."""
    x = np.random.default_rng(1).normal(size=(5, 40))
    assert abs(fid_from_features(x, x)) < 1e-10 * np.trace(np.cov(x, rowvar=False))
    with pytest.raises(ValueError, match="expected mu"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_inception_score_protocol():
    k = 7
    uniform = np.full((40, k), 1.0 / k)
    assert inception_score(uniform) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(k)[np.arange(70) % k]  # confident and diverse in every split: IS = k
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(k) and std == pytest.approx(0.0, abs=1e-12)
    probs = np.random.default_rng(0).dirichlet(np.ones(k), size=50)
    part = probs[:5]
    kl = (part * (np.log(part) - np.log(part.mean(0, keepdims=True)))).sum(1).mean()
    assert inception_score(probs, splits=10)[0] == pytest.approx(
        np.mean([np.exp((p * (np.log(p) - np.log(p.mean(0, keepdims=True)))).sum(1).mean())
                 for p in np.split(probs, 10)]))
    assert np.exp(kl) > 1.0
    with pytest.raises(ValueError, match="N >= 10"):
        inception_score(probs[:5])


def calibrate_batchnorm(model: InceptionV3, images: torch.Tensor) -> None:
    """Random weights with BN statistics of ``images`` (else activations vanish or explode)."""
    for m in model.net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.net.train()
    with torch.no_grad():
        model.net(torch.nn.functional.interpolate(images, size=(299, 299), mode="bilinear"))
    model.net.eval()


def test_inception_features_random_weights(tmp_path):
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        model = InceptionV3()
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    calibrate_batchnorm(model, images)
    pool, probs = inception_outputs(model, images, batch_size=4)
    assert pool.shape == (6, 2048) and probs.shape == (6, 1000)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-9)
    scale = np.trace(np.cov(pool, rowvar=False))
    assert scale > 0 and abs(fid_from_features(pool, pool)) < 1e-9 * scale
    # batched generation (an iterable of batches) gives the same features
    pool2, _ = inception_outputs(model, iter(images.split(3)))
    np.testing.assert_allclose(pool, pool2, rtol=1e-5, atol=1e-6)
    # a weights file round trip: same network, same features
    path = tmp_path / "inception.pth"
    torch.save(model.net.state_dict(), path)
    loaded = InceptionV3(path)
    np.testing.assert_allclose(inception_outputs(loaded, images)[0], pool, rtol=1e-5, atol=1e-6)
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="expected a torchvision inception_v3 state_dict"):
        InceptionV3(path)


def test_attribute_classifier_learns_colours():
    """Two colour attributes painted on random halves: the classifier learns them quickly."""
    g = torch.Generator().manual_seed(0)
    palette = torch.rand(5, 3, generator=g) * 2 - 1
    n = 256
    top, bottom = torch.randint(0, 5, (n,), generator=g), torch.randint(0, 5, (n,), generator=g)
    images = torch.empty(n, 3, 32, 32)
    images[:, :, :16] = palette[top].view(n, 3, 1, 1)
    images[:, :, 16:] = palette[bottom].view(n, 3, 1, 1)
    images += 0.05 * torch.randn(images.shape, generator=g)
    labels = {"wing": top, "belly": bottom}
    model = train_attribute_classifier(images, labels, {"wing": 5, "belly": 5}, epochs=8, batch_size=32)
    acc = attribute_accuracy(model, images, labels)
    assert acc["wing"] > 0.9 and acc["belly"] > 0.9
    assert isinstance(model, AttributeClassifier) and not model.training
    with pytest.raises(ValueError, match="labels"):
        train_attribute_classifier(images, {"wing": top[:3]}, {"wing": 5})
    with pytest.raises(ValueError, match="flip_swaps: 'wing' is not a two-class attribute"):
        train_attribute_classifier(images, labels, {"wing": 5, "belly": 5}, flip_swaps=("wing",))
    masked = attribute_accuracy(model, images, labels, masks={"wing": top == 0, "belly": torch.zeros(n, dtype=torch.bool)})
    assert set(masked) == {"wing"} and masked["wing"] > 0.8  # no image counts for belly: left out


def test_attribute_classifier_learns_a_facing_under_flips():
    """A dark left or right half: with flip_swaps the flipped copies keep their label true."""
    g = torch.Generator().manual_seed(0)
    n = 128
    side = torch.randint(0, 2, (n,), generator=g)
    images = torch.full((n, 3, 16, 16), 0.5) + 0.05 * torch.randn(n, 3, 16, 16, generator=g)
    images[side == 0, :, :, :8] = -0.5
    images[side == 1, :, :, 8:] = -0.5
    model = train_attribute_classifier(images, {"facing": side}, {"facing": 2}, epochs=6, batch_size=16,
                                       flip_swaps=("facing",))
    assert attribute_accuracy(model, images, {"facing": side})["facing"] > 0.9


def test_distinct_classes():
    assert distinct_classes(torch.tensor([3, 1, 3, 2, 0, 0, 0, 0, 5, 4, 3, 2]), 4).tolist() == [3, 1, 4]
    with pytest.raises(ValueError, match="expected"):
        distinct_classes(torch.arange(5), 4)
