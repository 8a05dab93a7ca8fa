"""DAMSM pre-training: a tiny run, its files, --resume (bit-exact), the CLI, encoder loading."""
from __future__ import annotations

import json
import warnings

import pytest
import torch

from attngan_fast import config
from attngan_fast.cli import main
from attngan_fast.models import CNN_ENCODER
from attngan_fast.models.small_cnn import SmallImageEncoder
from attngan_fast.training.damsm import build_image_encoder, image_encoder_path, load_encoders, pretrain_damsm

TINY = {"SYNTHETIC.NUM_IMAGES": 50, "TEXT.EMBEDDING_DIM": 16, "DAMSM.SMALL_CNN_WIDTH": 4,
        "DAMSM.SMALL_CNN_INPUT": 32, "TREE.BASE_SIZE": 32, "TRAIN.BATCH_SIZE": 8, "TRAIN.SNAPSHOT_INTERVAL": 2}
TINY_ARGS = [f"--set={k}={v}" for k, v in TINY.items()]


def tiny_cfg(epochs: int) -> config.Config:
    return config.load("synthetic_birds", **TINY, **{"TRAIN.MAX_EPOCH": epochs})


def test_small_image_encoder_shapes():
    enc = SmallImageEncoder(nef=24, width=4, input_size=32)
    regions, code = enc(torch.randn(3, 3, 40, 37))  # any input size: resized to 32
    assert regions.shape == (3, 24, 4, 4) and code.shape == (3, 24)
    with pytest.raises(ValueError, match=r"x: expected \(B, 3, H, W\)"):
        enc(torch.randn(3, 1, 32, 32))
    with pytest.raises(ValueError, match="multiple of 16"):
        SmallImageEncoder(8, 4, 40)


def test_image_encoder_choice():
    assert isinstance(build_image_encoder(tiny_cfg(1)), SmallImageEncoder)
    with pytest.warns(UserWarning, match="randomly initialised"):
        enc = build_image_encoder(config.load("DAMSM/bird"))  # the default: Inception-v3, no file given
    assert isinstance(enc, CNN_ENCODER)
    with pytest.raises(ValueError, match="DAMSM.IMAGE_ENCODER"):
        config.load("synthetic_birds", **{"DAMSM.IMAGE_ENCODER": "resnet"})


def test_tiny_pretrain_files_and_exact_resume(tmp_path):
    straight = pretrain_damsm(tiny_cfg(3), tmp_path / "a", seed=7, progress=False, log=lambda s: None)
    model = tmp_path / "a" / "Model"
    assert sorted(p.name for p in model.iterdir()) == [
        "damsm_state.pth", "image_encoder0.pth", "image_encoder2.pth", "text_encoder0.pth", "text_encoder2.pth"]
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert [e["epoch"] for e in run["epochs"]] == [0, 1, 2] and run["seed"] == 7
    assert run["epochs"][1]["lr"] == pytest.approx(0.002 * 0.98)
    assert 0.0 <= run["r_precision"]["mean"] <= 100.0 and len(run["r_precision"]["folds"]) == 10
    assert straight["r_precision"] == run["r_precision"]
    assert all(e["w_loss"] > 0 and e["val_s_loss"] > 0 for e in run["epochs"])

    pretrain_damsm(tiny_cfg(1), tmp_path / "b", seed=7, progress=False, log=lambda s: None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # MAX_EPOCH may change on resume without a warning
        resumed = pretrain_damsm(tiny_cfg(3), tmp_path / "b", resume=True, progress=False, log=lambda s: None)
    a = torch.load(model / "damsm_state.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "Model" / "damsm_state.pth", weights_only=True)
    for name in ("text_encoder", "image_encoder"):
        assert a[name].keys() == b[name].keys()
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name
    assert a["lr"] == b["lr"] and resumed["r_precision"] == straight["r_precision"]

    text, image = load_encoders(tiny_cfg(3), run["n_words"], model / "text_encoder2.pth")
    assert not text.training and not any(p.requires_grad for p in image.parameters())
    assert torch.equal(text.encoder.weight, a["text_encoder"]["encoder.weight"])
    with pytest.raises(ValueError, match="vocabulary of .* words, the data has 5"):
        load_encoders(tiny_cfg(3), 5, model / "text_encoder2.pth")
    assert image_encoder_path("x/text_encoder200.pth").as_posix() == "x/image_encoder200.pth"


def test_cli_pretrain_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["pretrain-damsm", "--cfg", "synthetic_birds", "--out", str(out), "--seed", "3", "--no-progress", *TINY_ARGS]
    assert main(args + ["--set", "TRAIN.MAX_EPOCH=1"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["out"] == str(out) and printed["r_precision"].endswith("%")
    assert main(args + ["--set", "TRAIN.MAX_EPOCH=2"]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(args + ["--set", "TRAIN.MAX_EPOCH=2", "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "resuming" in printed and "TRAIN.MAX_EPOCH changed: 1 -> 2" in printed
    run = json.loads((out / "run.json").read_text())
    assert [e["epoch"] for e in run["epochs"]] == [0, 1] and run["seed"] == 3
    assert main(["pretrain-damsm", "--cfg", "synthetic_birds", "--set", "nonsense"]) == 2
    assert "error: --set 'nonsense': expected KEY=VALUE" in capsys.readouterr().err
    assert main(["pretrain-damsm", "--cfg", "synthetic_birds", "--set", "TRAIN.NOPE=1"]) == 2
    assert "unknown config key" in capsys.readouterr().err
