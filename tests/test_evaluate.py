"""``attngan-fast evaluate`` and its pieces on a tiny synthetic-birds run."""
from __future__ import annotations

import json

import pytest
import torch

from attngan_fast.cli import main
from attngan_fast.data import build_dataset
from attngan_fast.metrics.evaluate import evaluate_generator, format_table, split_captions
from attngan_fast.sampling import Generator
from attngan_fast.training.damsm import load_encoders
from attngan_fast.training import TrainOptions, train_gan
from training_helpers import single_thread, synthetic_run_files


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("evaluate")
    with single_thread():
        cfg_path, cfg, net_e = synthetic_run_files(tmp)
        summary = train_gan(cfg, TrainOptions(out_dir=str(tmp / "run"), seed=1, max_epochs=1, progress=False,
                                              sample_every=0))
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
        result = evaluate_generator(gen, cfg, metrics=("r_precision", "attributes"), damsm_encoders=encoders,
                                    classifier_epochs=2, log=lambda m: None)
    assert result["images"] == 10 and result["image_size"] == 128
    assert 0 <= result["r_precision"]["mean"] <= 100 and len(result["r_precision"]["folds"]) == 10
    assert set(result["attribute_accuracy"]) == {"wing", "belly"}
    assert all(0.0 <= v <= 1.0 for v in result["attribute_accuracy"].values())
    table = format_table(result)
    assert "R-precision (%)" in table and "wing colour accuracy (%)" in table
    with pytest.raises(ValueError, match="unknown"):
        evaluate_generator(gen, cfg, metrics=("bleu",))
    with pytest.raises(ValueError, match="Inception-v3 weights"):
        evaluate_generator(gen, cfg, metrics=("fid",))


def test_inception_metrics(trained, tmp_path):
    _, cfg, snapshot, _ = trained
    from attngan_fast.metrics.inception import InceptionV3

    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        weights = InceptionV3().net.state_dict()
    torch.save(weights, tmp_path / "inception.pth")
    with single_thread():
        gen = Generator.from_checkpoint(snapshot)
        result = evaluate_generator(gen, cfg, metrics=("is", "fid"), inception_weights=str(tmp_path / "inception.pth"),
                                    log=lambda m: None)
    assert result["inception_score"]["mean"] >= 1.0 and result["fid"] >= 0.0
    assert "Inception Score" in format_table(result) and "FID" in format_table(result)


def test_evaluate_cli(trained, capsys):
    tmp, _, snapshot, _ = trained
    out = tmp / "eval.json"
    with single_thread():
        assert main(["evaluate", "--checkpoint", snapshot, "--json", str(out), "--device", "cpu",
                     "--metrics", "r_precision"]) == 0
    printed = capsys.readouterr().out
    assert "R-precision (%)" in printed and str(out) in printed
    assert json.loads(out.read_text())["images"] == 10
