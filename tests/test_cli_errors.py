"""One error path for every subcommand: ``error: <what>: <why>``, exit code 2 for usage errors and 1
for failures, a traceback only with ``--debug``; validated counts; ``--set`` as YAML 1.2;
``pretrain-damsm --resume`` with its saved config; ``make-synthetic`` into a used folder;
non-integer DAMSM caption lengths."""
from __future__ import annotations

import errno
import json
import math

import pytest
import torch
import yaml

import attngan_fast
from attngan_fast import config
from attngan_fast.cli import build_parser, main
from attngan_fast.cli.common import config_from_args
from attngan_fast.data.synthetic import write_birds_layout
from attngan_fast.io import atomic_write_json
from attngan_fast.metrics.evaluate import evaluate_generator
from attngan_fast.sampling import Generator
from attngan_fast.training import TrainOptions
from tests.test_pretrain_damsm import TINY_ARGS
from tests.training_helpers import single_thread

# ---- counts, sizes and times -------------------------------------------------------------------
BAD_OPTIONS = [
    ("evaluate", "--batch-size", "0", "an integer >= 1"), ("evaluate", "--batch-size", "-3", "an integer >= 1"),
    ("evaluate", "--num-images", "0", "an integer >= 1"), ("evaluate", "--num-images", "-5", "an integer >= 1"),
    ("evaluate", "--batch-size", "two", "an integer >= 1"),
    ("generate", "--num", "0", "an integer >= 1"), ("generate", "--batch-size", "0", "an integer >= 1"),
    ("train", "--snapshot-every", "0", "an integer >= 1"), ("train", "--snapshot-every", "-1", "an integer >= 1"),
    ("train", "--max-minutes", "-1", "a number >= 0"), ("train", "--max-minutes", "nan", "a number >= 0"),
    ("train", "--max-epochs", "0", "an integer >= 1"), ("train", "--sample-every", "-1", "an integer >= 0"),
    ("train", "--log-every", "0", "an integer >= 1"), ("train", "--accum-steps", "0", "an integer >= 1"),
    ("train", "--workers", "-1", "an integer >= 0"), ("train", "--threads", "0", "an integer >= 1"),
    ("pretrain-damsm", "--threads", "-2", "an integer >= 1"),
    ("make-synthetic", "--n", "0", "an integer >= 1"), ("make-synthetic", "--size", "0", "an integer >= 1"),
    ("make-synthetic", "--test-fraction", "0", "a number > 0 and < 1"),
    ("make-synthetic", "--test-fraction", "1", "a number > 0 and < 1"),
    ("demo", "--minutes", "2", "a number >= 3"),
]
REQUIRED = {"train": ["--out", "x"], "make-synthetic": ["x"]}


@pytest.mark.parametrize("command, option, value, want", BAD_OPTIONS)
def test_bad_option_values_are_usage_errors(command, option, value, want, capsys):
    assert main([command, *REQUIRED.get(command, []), f"{option}={value}"]) == 2
    assert f"error: argument {option}: expected {want}, got '{value}'" in capsys.readouterr().err


def test_edge_values_that_mean_something_are_accepted():
    args = build_parser().parse_args(["train", "--out", "x", "--sample-every", "0", "--workers", "0",
                                      "--max-minutes", "0.5", "--encoder-amp", "bf16"])
    assert (args.sample_every, args.workers, args.max_minutes, args.encoder_amp) == (0, 0, 0.5, "bf16")


def test_library_counts_are_checked(original_files):
    with pytest.raises(ValueError, match="num_images: expected >= 1, got 0"):
        evaluate_generator(None, config.load("synthetic_birds"), num_images=0)
    with pytest.raises(ValueError, match="batch_size: expected >= 1, got -3"):
        evaluate_generator(None, config.load("synthetic_birds"), batch_size=-3)
    with pytest.raises(ValueError, match="num_images: expected >= 1, got 0"):
        write_birds_layout("unused", 0)
    for name, value in (("snapshot_every", 0), ("max_epochs", 0), ("sample_every", -1), ("workers", -1),
                        ("max_minutes", -1.0), ("accum_steps", 0)):
        with pytest.raises(ValueError, match=f"{name}: expected"):
            TrainOptions(out_dir="x", **{name: value})
    paths = original_files[0]
    with single_thread():
        gen = Generator.from_checkpoint(**{k: str(v) for k, v in paths.items()})
        for batch_size in (0, -3):
            with pytest.raises(ValueError, match=f"batch_size: expected >= 1, got {batch_size}"):
                gen.generate(["a bird"], batch_size=batch_size)
        with pytest.raises(ValueError, match="num=0"):
            gen.generate(["a bird"], num=0)


# ---- one error path ----------------------------------------------------------------------------
def test_failures_exit_1_with_one_line_and_debug_shows_the_traceback(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a snapshot\n")
    argv = ["generate", "a bird", "--checkpoint", str(text)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == (f"error: {text}: expected an attngan_fast training snapshot (checkpoint_epoch_*.pt), found a "
                   "text file (starting 'not a snapshot\\n')\n")
    with pytest.raises(ValueError, match="found a text file"):
        main(["--debug", *argv])  # raised: Python prints the traceback


def test_unexpected_errors_name_their_type(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("something inside")

    monkeypatch.setattr("attngan_fast.cli.demo.run_demo", lambda *a, **k: broken(None))
    assert main(["demo"]) == 1
    assert capsys.readouterr().err == ("error: RuntimeError: something inside (attngan-fast --debug ... shows the "
                                       "traceback)\n")


def test_unwritable_outputs_and_a_full_disk(tmp_path, capsys, monkeypatch, original_files):
    paths = original_files[0]
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    files = [x for k in ("netG", "text_encoder", "captions", "cfg") for x in (f"--{k.replace('_', '-')}", str(paths[k]))]
    with single_thread():
        assert main(["generate", "a bird", *files, "--out", str(blocker / "images"), "--threads", "1",
                     "--no-progress"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {blocker / 'images'}")
    monkeypatch.setattr("attngan_fast.cli.evaluate.evaluate_generator", lambda *a, **k: {"images": 1})
    monkeypatch.setattr("attngan_fast.cli.evaluate.format_table", lambda result: "table")
    with single_thread():
        assert main(["evaluate", *files, "--metrics", "is", "--json", str(blocker / "e.json"), "--threads", "1"]) == 1
    assert capsys.readouterr().err.startswith(f"error: {blocker}: ")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("attngan_fast.io.os.fsync", no_space)
    with pytest.raises(OSError, match="No space left on device") as info:
        atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert info.value.filename == str(tmp_path / "r.json") and not list(tmp_path.glob(".r.json*"))
    assert main(["make-synthetic", str(tmp_path / "birds"), "--n", "2", "--size", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'birds'}") and err.endswith(": No space left on device\n")


# ---- --set and config files as YAML 1.2 --------------------------------------------------------
def test_set_values_are_yaml_1_2(tmp_path, capsys):
    args = build_parser().parse_args([
        "pretrain-damsm", "--cfg", "bird_attn2", "--set", "TRAIN.GENERATOR_LR=2e-4", "--set", "TRAIN.ENCODER_LR=1E-3",
        "--set", "TRAIN.DISCRIMINATOR_LR=.5", "--set", "TRAIN.RNN_GRAD_CLIP=.inf", "--set", "TRAIN.FLAG=false",
        "--set", "TRAIN.NET_G=", "--set", "CONFIG_NAME=yes", "--set", "TRAIN.SMOOTH={GAMMA1: 4e0}"])
    cfg = config_from_args(args)
    assert cfg.TRAIN.GENERATOR_LR == 2e-4 and cfg.TRAIN.ENCODER_LR == 1e-3 and cfg.TRAIN.DISCRIMINATOR_LR == 0.5
    assert math.isinf(cfg.TRAIN.RNN_GRAD_CLIP) and cfg.TRAIN.FLAG is False and cfg.TRAIN.NET_G == ""
    assert cfg.CONFIG_NAME == "yes" and cfg.TRAIN.SMOOTH.GAMMA1 == 4.0  # YAML 1.1 would read yes as True
    for value, parsed in (("2e-4", 2e-4), ("-1.5E+3", -1500.0), ("010", 10), ("0x1f", 31), ("0o17", 15),
                          ("true", True), ("~", None), ("null", None), ("on", "on"), ("1_000", "1_000"),
                          ("2020-01-02", "2020-01-02"), ("[1, 2e-4]", [1, 2e-4]), ("inf", "inf")):
        assert config.parse_yaml(value, "test") == parsed, value
    assert math.isnan(config.parse_yaml(".NaN", "test"))
    assert main(["pretrain-damsm", "--cfg", "bird_attn2", "--set", "TRAIN.FLAG=[1"]) == 2
    assert "error: --set 'TRAIN.FLAG=[1': not valid YAML" in capsys.readouterr().err
    user = tmp_path / "user.yml"
    user.write_text("TRAIN:\n  GENERATOR_LR: 2e-4\n  BATCH_SIZE: 1e1\n")
    with pytest.raises(ValueError, match=r"TRAIN.BATCH_SIZE': expected int, got float \(10.0\)"):
        config.load(user)
    user.write_text("TRAIN:\n  GENERATOR_LR: 2e-4\n")
    assert config.load(user).TRAIN.GENERATOR_LR == 2e-4
    user.write_text("TRAIN: [\n")
    with pytest.raises(ValueError, match=f"config file {user}: not valid YAML"):
        config.load(user)


def test_shipped_configs_read_as_before():
    for name in config.available():
        text = config.resolve(name).read_text()
        assert config.parse_yaml(text, name) == yaml.safe_load(text), name


# ---- pretrain-damsm --resume -------------------------------------------------------------------
def test_pretrain_damsm_resume_uses_the_saved_config(tmp_path, capsys):
    out = tmp_path / "run"
    with single_thread():
        assert main(["pretrain-damsm", "--cfg", "synthetic_birds", "--out", str(out), "--seed", "3", "--no-progress",
                     "--threads", "1", *TINY_ARGS, "--set", "TRAIN.MAX_EPOCH=1"]) == 0
        capsys.readouterr()
        # no --cfg: the saved config, with a resumable --set change named in the log
        assert main(["pretrain-damsm", "--resume", "--out", str(out), "--no-progress", "--threads", "1",
                     "--set", "TRAIN.MAX_EPOCH=2"]) == 0
        printed = capsys.readouterr().out
        assert "resuming" in printed and "TRAIN.MAX_EPOCH changed: 1 -> 2" in printed
        run = json.loads((out / "run.json").read_text())
        assert [e["epoch"] for e in run["epochs"]] == [0, 1] and run["config"]["TRAIN"]["BATCH_SIZE"] == 8
        # a conflicting --cfg or --set is refused, naming the keys
        assert main(["pretrain-damsm", "--resume", "--out", str(out), "--cfg", "synthetic_birds"]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: resume: the config differs from the run's saved config in ")
        assert "TRAIN.BATCH_SIZE (saved 8, given 32)" in err and "TEXT.EMBEDDING_DIM (saved 16, given 128)" in err
        assert main(["pretrain-damsm", "--resume", "--out", str(out), "--set", "TRAIN.BATCH_SIZE=4"]) == 1
        assert "TRAIN.BATCH_SIZE (saved 8, given 4); only " in capsys.readouterr().err
    assert main(["pretrain-damsm", "--resume", "--out", str(tmp_path / "none")]) == 1
    assert "damsm_state.pth: no such file (expected a DAMSM pre-training state" in capsys.readouterr().err
    assert main(["pretrain-damsm", "--out", str(tmp_path / "x")]) == 2
    assert "error: pretrain-damsm needs --cfg (or --resume)" in capsys.readouterr().err


# ---- make-synthetic into a used folder ---------------------------------------------------------
def test_make_synthetic_refuses_a_used_folder(tmp_path, capsys):
    out = tmp_path / "birds"
    assert main(["make-synthetic", str(out), "--n", "6", "--size", "8"]) == 0
    images = sorted((out / "CUB_200_2011" / "images").rglob("*.jpg"))
    assert len(images) == 6
    assert main(["make-synthetic", str(out), "--n", "3", "--size", "8", "--seed", "1"]) == 1
    assert f"error: {out}: holds a data set already (CUB_200_2011, text, train, test, captions.pickle, " \
        "attributes.json)" in capsys.readouterr().err
    assert sorted((out / "CUB_200_2011" / "images").rglob("*.jpg")) == images  # untouched
    assert main(["make-synthetic", str(out), "--n", "3", "--size", "8", "--seed", "1", "--overwrite"]) == 0
    assert len(list((out / "CUB_200_2011" / "images").rglob("*.jpg"))) == 3  # the old images are gone
    assert len(json.loads((out / "attributes.json").read_text())) == 3
    other = tmp_path / "real"
    (other / "CUB_200_2011").mkdir(parents=True)
    assert main(["make-synthetic", str(other), "--n", "3", "--size", "8", "--overwrite"]) == 1
    assert "not a synthetic birds folder (no attributes.json); refusing to clear it" in capsys.readouterr().err
    assert (other / "CUB_200_2011").is_dir()


# ---- DAMSM caption lengths ---------------------------------------------------------------------
def test_non_integer_caption_lengths_are_refused():
    words, regions = torch.randn(3, 4, 5), torch.randn(3, 4, 2, 2)
    with pytest.raises(ValueError, match=r"cap_lens: expected whole numbers, got cap_lens\[1\] = 2.7"):
        attngan_fast.ops.damsm_word_similarity(words, [5, 2.7, 2], regions, 4.0, 5.0)
    with pytest.raises(ValueError, match=r"cap_lens\[1\] = 2.7"):
        attngan_fast.losses.words_loss(regions, words, torch.arange(3), [5, 2.7, 2], None, 3,
                                       config.load("DAMSM/bird"))
    with attngan_fast.backend("reference"):
        with pytest.raises(ValueError, match=r"cap_lens\[0\] = 1.5"):
            attngan_fast.ops.damsm_word_similarity(words, torch.tensor([1.5, 2.0, 2.0]).tolist(), regions, 4.0, 5.0)
    sim, _ = attngan_fast.ops.damsm_word_similarity(words, [5.0, 3, 2], regions, 4.0, 5.0)  # whole floats are fine
    assert sim.shape == (3, 3)
