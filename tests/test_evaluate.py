"""``attngan-fast evaluate`` and its pieces on a tiny synthetic-birds run."""
from __future__ import annotations

import json
import re

import pytest
import torch

from attngan_fast.cli import main
from attngan_fast.data import build_dataset
from attngan_fast.metrics import fid as fid_module
from attngan_fast.metrics.evaluate import default_metrics, evaluate_generator, format_table, split_captions
from attngan_fast.metrics.fid import MetricsExtraMissing, tf_fid_available
from attngan_fast.sampling import Generator
from attngan_fast.training import TrainOptions, train_gan
from attngan_fast.training.damsm import load_encoders
from tests.training_helpers import single_thread, synthetic_run_files


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    with single_thread():
        cfg_path, cfg, net_e = synthetic_run_files(tmp)
        # eval_every: the training-time metrics (FID needs the metrics extra) on 4 test captions
        summary = train_gan(cfg, TrainOptions(out_dir=str(tmp / "run"), seed=1, max_epochs=1, progress=False,
                                              sample_every=0, eval_every=1, eval_images=4))
    return tmp, cfg, summary["snapshot"], net_e


def test_test_captions_cycle_through_epochs(trained):
    _, cfg, _, _ = trained
    test_set = build_dataset(cfg, "test", seed=0, augment=False)
    caps, lens, owners = split_captions(test_set, 25)
    assert caps.shape == (25, cfg.TEXT.WORDS_NUM) and owners.tolist() == list(range(10)) * 2 + list(range(5))
    first = test_set[3]
    assert torch.equal(caps[3], first.caption) and int(lens[3]) == first.cap_len


def test_evaluate_generator(trained):
    _, cfg, snapshot, net_e = trained
    with single_thread():
        gen = Generator.from_checkpoint(snapshot)
        encoders = load_encoders(cfg, gen.vocab.n_words, net_e)
        result = evaluate_generator(gen, cfg, metrics=("r_precision", "attributes", "diversity"),
                                    damsm_encoders=encoders, classifier_epochs=2, diversity_samples=3,
                                    diversity_captions=4, log=lambda m: None)
    assert result["images"] == 10 and result["image_size"] == 128
    assert 0 <= result["r_precision"]["mean"] <= 100 and len(result["r_precision"]["folds"]) == 10
    assert {"wing", "belly"} <= set(result["attribute_accuracy"]) <= {"wing", "belly", "head", "beak", "size"}
    assert all(0.0 <= v <= 1.0 for v in result["attribute_accuracy"].values())
    assert set(result["attribute_accuracy_real"]) == {"wing", "belly", "head", "beak", "size", "background", "facing"}
    for name in ("background", "facing"):  # never named: every one of the 4 captions counts
        d = result["diversity"][name]
        assert d["captions"] == 4 and 1 <= d["generated"] <= 3 and 1 <= d["real"] <= 3
        assert d["relative"] == pytest.approx(d["generated"] / d["real"])
    table = format_table(result)
    assert "R-precision (%)" in table and "wing colour accuracy (%)" in table
    with pytest.raises(ValueError, match="unknown"):
        evaluate_generator(gen, cfg, metrics=("bleu",))
    with pytest.raises(ValueError, match="metric 'is' needs a classifier"):
        evaluate_generator(gen, cfg, metrics=("is",))


def test_training_time_metrics_in_the_log(trained):
    tmp, _, _, _ = trained
    records = [json.loads(line) for line in (tmp / "run" / "log.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_images" in r]
    assert len(evals) == 1 and evals[0]["epoch"] == 0 and evals[0]["eval_images"] == 4
    assert 0.0 <= evals[0]["r_precision"] <= 100.0
    with pytest.raises(ValueError, match="eval_images: expected >= 2"):
        TrainOptions(out_dir=str(tmp), eval_every=1, eval_images=1)
    if tf_fid_available():
        assert evals[0]["fid"] >= 0.0 and evals[0]["fid_protocol"] == "tf-fid/bilinear-tf" and "kid" in evals[0]


def test_inception_metrics_legacy_protocol(trained, tmp_path):
    _, cfg, snapshot, _ = trained
    from attngan_fast.metrics.inception import InceptionV3

    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        weights = InceptionV3().net.state_dict()
    torch.save(weights, tmp_path / "inception.pth")
    with single_thread():
        gen = Generator.from_checkpoint(snapshot)
        result = evaluate_generator(gen, cfg, metrics=("is", "fid", "kid"), fid_protocol="torchvision-legacy",
                                    resize="bicubic-pil", inception_weights=str(tmp_path / "inception.pth"),
                                    log=lambda m: None)
    assert result["inception_score"]["mean"] >= 1.0 and result["fid"] >= 0.0
    assert result["inception_score"]["classifier"]["classes"] == 1000 and result["inception_score"]["splits"] == 10
    assert result["fid_protocol"]["protocol"] == "torchvision-legacy" and result["fid_protocol"]["resize"] == "bicubic-pil"
    assert result["kid"]["subsets"] == 5 and result["kid"]["stderr"] > 0
    table = format_table(result)
    assert "Inception Score (1000 classes, 10 splits)" in table
    assert "FID (torchvision-legacy, resize bicubic-pil, vs 10 real)" in table and "KID x 1000" in table


def test_evaluate_without_the_metrics_extra_explains(trained, monkeypatch, capsys):
    tmp, cfg, snapshot, _ = trained
    monkeypatch.setattr(fid_module, "TF_FID_PACKAGE", "attngan_fast_no_such_package")
    metrics, note = default_metrics(cfg)
    assert metrics == ["r_precision", "attributes", "diversity"] and 'pip install -e ".[metrics]"' in note
    table = format_table({"images": 10, "image_size": 128, "notes": [note]})
    assert 'FID/KID not computed: FID/KID with the standard TF-FID Inception need the metrics extra' in table
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", snapshot, "--json", str(tmp / "none.json"), "--device", "cpu",
                 "--metrics", "fid"]) == 1
    assert re.search(r'error: metrics .fid. / .kid.: .*pip install -e "\.\[metrics\]"', capsys.readouterr().err)
    with pytest.raises(MetricsExtraMissing):
        evaluate_generator(Generator.from_checkpoint(snapshot), cfg, metrics=("kid",))


@pytest.mark.skipif(not tf_fid_available(), reason='needs the metrics extra: pip install -e ".[metrics]"')
def test_evaluate_cli_reports_tf_fid(trained, capsys):
    tmp, _, snapshot, _ = trained
    out = tmp / "eval_fid.json"
    with single_thread():
        assert main(["evaluate", "--checkpoint", snapshot, "--json", str(out), "--device", "cpu",
                     "--metrics", "fid,kid", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "FID (tf-fid, resize bilinear-tf, vs 10 real)" in printed and "KID x 1000 (tf-fid)" in printed
    result = json.loads(out.read_text())
    assert result["fid_protocol"]["protocol"] == "tf-fid" and result["fid"] >= 0.0
    assert result["fid_protocol"]["model_sha1"] == fid_module.TF_FID_SHA1
    assert result["fid_reference"]["images"] == 10 and "test split" in result["fid_reference"]["source"]


def test_evaluate_cli(trained, capsys):
    tmp, _, snapshot, _ = trained
    out = tmp / "eval.json"
    with single_thread():
        assert main(["evaluate", "--checkpoint", snapshot, "--json", str(out), "--device", "cpu",
                     "--metrics", "r_precision"]) == 0
    printed = capsys.readouterr().out
    assert "R-precision (%)" in printed and str(out) in printed
    assert json.loads(out.read_text())["images"] == 10
