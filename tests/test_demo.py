"""``attngan-fast demo`` end to end with tiny configs (the real one is run by hand; see README)."""
from __future__ import annotations

import json

import pytest
from PIL import Image

from attngan_fast.cli import main
from attngan_fast.demo import EVAL_RESERVE_MINUTES, PROMPTS, run_demo
from attngan_fast.training import load_snapshot
from attngan_fast.visualize import _LABEL_HEIGHT
from tests.training_helpers import single_thread

TINY = {"SYNTHETIC.NUM_IMAGES": 50, "TRAIN.BATCH_SIZE": 8, "TEXT.EMBEDDING_DIM": 8, "DAMSM.SMALL_CNN_WIDTH": 4,
        "DAMSM.SMALL_CNN_INPUT": 32}


@pytest.mark.parametrize("branches", [1, 2])
def test_demo_pipeline_tiny(tmp_path, branches):
    gan = {**TINY, "TRAIN.BATCH_SIZE": 4, "GAN.GF_DIM": 2, "GAN.DF_DIM": 2, "TREE.BRANCH_NUM": branches}
    with single_thread():
        summary = run_demo(tmp_path, minutes=EVAL_RESERVE_MINUTES + 0.05, threads=None, progress=False,
                           damsm_overrides={**TINY, "TRAIN.MAX_EPOCH": 1}, gan_overrides=gan, log=lambda m: None)
    assert summary["gan"]["steps"] >= 1
    if branches == 2:  # the 64 px stage alone first, then both stages grown from it
        assert summary["gan_64px"]["steps"] >= 1 and (tmp_path / "gan_64px" / "run.json").exists()
    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["prompts"] == list(PROMPTS)
    assert {"mean", "std"} <= set(saved["evaluation"]["r_precision"])
    evaluation = saved["evaluation"]
    assert {"wing", "belly"} <= set(evaluation["attribute_accuracy"]) <= {"wing", "belly", "head", "beak", "size"}
    assert {"background", "facing"} <= set(evaluation["diversity"])  # never named by a caption
    assert all(d["relative"] > 0 for d in evaluation["diversity"].values())
    if "fid_protocol" in evaluation:  # the metrics extra is installed
        assert evaluation["fid"] >= 0 and evaluation["fid_protocol"]["protocol"] == "tf-fid"
    prompts = tmp_path / "prompts"
    for i in range(len(PROMPTS)):
        for j in range(4):
            assert (prompts / f"{i:03d}_{j}_g{branches - 1}.png").exists()
            assert (prompts / f"{i:03d}_{j}_attention.png").exists()
    figure = Image.open(prompts / "001_0_attention.png")
    assert figure.width == 128 * (1 + len(PROMPTS[1].split()))  # the image, then one cell per word
    # one row per attention stage of G (the 128 px stage's word maps), then DAMSM's row
    assert figure.height == branches * (128 + _LABEL_HEIGHT)
    assert (tmp_path / "gan" / "run.json").exists() and (tmp_path / "evaluation.json").exists()
    if branches == 1:  # a reused demo folder starts the GAN afresh (its previous gan/ run is cleared)
        with single_thread():
            again = run_demo(tmp_path, minutes=EVAL_RESERVE_MINUTES + 0.05, threads=None, progress=False,
                             damsm_overrides={**TINY, "TRAIN.MAX_EPOCH": 1}, gan_overrides=gan, log=lambda m: None)
        steps = [json.loads(line)["step"] for line in (tmp_path / "gan" / "log.jsonl").read_text().splitlines()]
        assert steps == list(range(20, again["gan"]["steps"] + 1, 20))  # log_every 20, no step twice
        snapshots = [load_snapshot(p) for p in (tmp_path / "gan").glob("checkpoint_epoch_*.pt")]
        assert snapshots and all(snap["step"] <= again["gan"]["steps"] for snap in snapshots)


def test_demo_cli_rejects_tiny_budgets(capsys):
    assert main(["demo", "--minutes", "1"]) == 2
    assert "--minutes: expected a number >= 3, got '1'" in capsys.readouterr().err


@pytest.mark.parametrize("stage", ["gan_64px", "gan"])
def test_demo_stops_where_a_signal_stopped_a_gan_stage(tmp_path, monkeypatch, stage):
    """SIGINT / SIGTERM end a GAN stage with a snapshot (the trainer catches them); the demo then
    stops there: no later stage, no images, no evaluation, and the CLI exits 128 + the signal."""
    import attngan_fast.cli.demo as cli_demo
    import attngan_fast.training as training

    real = training.train_gan

    def train_gan(cfg, options, **kwargs):
        summary = real(cfg, options, **kwargs)
        return {**summary, "interrupted": "SIGTERM"} if options.out_dir.endswith(stage) else summary

    monkeypatch.setattr(training, "train_gan", train_gan)
    gan = {**TINY, "TRAIN.BATCH_SIZE": 4, "GAN.GF_DIM": 2, "GAN.DF_DIM": 2, "TREE.BRANCH_NUM": 2}
    lines = []
    with single_thread():
        summary = run_demo(tmp_path, minutes=EVAL_RESERVE_MINUTES + 0.05, threads=None, progress=False,
                           damsm_overrides={**TINY, "TRAIN.MAX_EPOCH": 1}, gan_overrides=gan, log=lines.append)
    assert summary["interrupted"] == "SIGTERM" and summary["steps"] >= 1
    assert (tmp_path / stage / "run.json").exists()
    assert (tmp_path / "gan").exists() == (stage == "gan")
    assert not any((tmp_path / name).exists() for name in ("prompts", "evaluation.json", "demo.json"))
    assert "interrupted by SIGTERM" in lines[-1]
    monkeypatch.setattr(cli_demo, "run_demo", lambda *a, **k: summary)
    with single_thread():
        assert main(["demo", "--out", str(tmp_path), "--threads", "1"]) == 143
