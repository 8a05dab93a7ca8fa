import dataclasses
import textwrap

import pytest

from attngan_fast import config

SHIPPED = ["DAMSM/bird", "DAMSM/coco", "bird_attn2", "bird_attnDCGAN2", "coco_attn2", "eval_bird",
           "eval_bird_attnDCGAN2", "eval_coco"]


def test_all_original_configs_ship():
    assert set(SHIPPED) <= set(config.available())


@pytest.mark.parametrize("name", config.available())
def test_every_shipped_yaml_loads(name):
    cfg = config.load(name)
    assert isinstance(cfg, config.Config)
    assert config.load(config.resolve(name)) == cfg  # by path too


def test_original_defaults():
    cfg = config.defaults()
    assert (cfg.TREE.BRANCH_NUM, cfg.TREE.BASE_SIZE) == (3, 64)
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.MAX_EPOCH, cfg.TRAIN.SNAPSHOT_INTERVAL) == (64, 600, 2000)
    smooth = cfg.TRAIN.SMOOTH
    assert (smooth.GAMMA1, smooth.GAMMA2, smooth.GAMMA3, smooth.LAMBDA) == (5.0, 5.0, 10.0, 1.0)
    assert (cfg.GAN.DF_DIM, cfg.GAN.GF_DIM, cfg.GAN.Z_DIM, cfg.GAN.CONDITION_DIM, cfg.GAN.R_NUM) == (64, 128, 100, 100, 2)
    assert cfg.GAN.B_ATTENTION and not cfg.GAN.B_DCGAN and cfg.GAN.MASK_MODE == "per_sample"
    assert (cfg.TEXT.CAPTIONS_PER_IMAGE, cfg.TEXT.EMBEDDING_DIM, cfg.TEXT.WORDS_NUM) == (10, 256, 18)
    assert (cfg.RNN_TYPE, cfg.WORKERS, cfg.CUDA, cfg.B_VALIDATION, cfg.TRAIN.ENCODER_LR) == ("LSTM", 6, True, False, 2e-4)


@pytest.mark.parametrize("name, values", [
    ("bird_attn2", dict(GF=32, DF=64, R=2, W=18, B=20, LAMBDA=5.0, G1=4.0, BR=3, BASE=64)),
    ("coco_attn2", dict(GF=48, DF=96, R=3, W=12, B=14, LAMBDA=50.0, G1=4.0, BR=3, BASE=64)),
    ("eval_bird", dict(GF=32, DF=64, R=2, W=25, B=100, LAMBDA=1.0, G1=5.0, BR=3, BASE=64)),
    ("eval_coco", dict(GF=48, DF=96, R=3, W=20, B=100, LAMBDA=1.0, G1=5.0, BR=3, BASE=64)),
    ("DAMSM/bird", dict(GF=128, DF=64, R=2, W=18, B=48, LAMBDA=1.0, G1=4.0, BR=1, BASE=299)),
    ("DAMSM/coco", dict(GF=128, DF=64, R=2, W=15, B=48, LAMBDA=1.0, G1=4.0, BR=1, BASE=299)),
    ("bird_attnDCGAN2", dict(GF=32, DF=64, R=0, W=18, B=30, LAMBDA=1.0, G1=4.0, BR=3, BASE=64)),
])
def test_shipped_values_match_the_spec(name, values):
    cfg = config.load(name)
    got = dict(GF=cfg.GAN.GF_DIM, DF=cfg.GAN.DF_DIM, R=cfg.GAN.R_NUM, W=cfg.TEXT.WORDS_NUM, B=cfg.TRAIN.BATCH_SIZE,
               LAMBDA=cfg.TRAIN.SMOOTH.LAMBDA, G1=cfg.TRAIN.SMOOTH.GAMMA1, BR=cfg.TREE.BRANCH_NUM, BASE=cfg.TREE.BASE_SIZE)
    assert got == values


def test_eval_and_dcgan_flags():
    assert not config.load("eval_bird").TRAIN.FLAG and not config.load("eval_bird").TRAIN.B_NET_D
    assert config.load("bird_attnDCGAN2").GAN.B_DCGAN and config.load("eval_bird_attnDCGAN2").GAN.B_DCGAN
    assert config.load("DAMSM/bird").TRAIN.ENCODER_LR == 2e-3


def test_immutable():
    cfg = config.load("bird_attn2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.GAN.GF_DIM = 8  # type: ignore[misc]


def test_overrides_dotted_nested_and_replace():
    cfg = config.load("bird_attn2", **{"TRAIN.BATCH_SIZE": 4}, GAN={"GF_DIM": 8}, TRAIN__SMOOTH__LAMBDA=2)
    assert (cfg.TRAIN.BATCH_SIZE, cfg.GAN.GF_DIM, cfg.TRAIN.SMOOTH.LAMBDA) == (4, 8, 2.0)
    assert cfg.GAN.DF_DIM == 64  # untouched siblings keep the file's values
    assert cfg.replace(**{"GAN.R_NUM": 1}).GAN.R_NUM == 1 and cfg.GAN.R_NUM == 2


def test_dict_round_trip():
    cfg = config.load("coco_attn2", **{"GAN.MASK_MODE": "original"})
    assert config.from_dict(cfg.to_dict()) == cfg


def test_original_yaml_file_unchanged(tmp_path):
    path = tmp_path / "mine.yml"
    path.write_text(textwrap.dedent("""\
        CONFIG_NAME: 'attn2'
        DATASET_NAME: 'birds'
        DATA_DIR: '../data/birds'
        GPU_ID: 3
        WORKERS: 1
        B_VALIDATION: True
        TREE:
            BRANCH_NUM: 2
        TRAIN:
            FLAG: False
            NET_G: '../models/bird_AttnGAN2.pth'  # a comment
            B_NET_D: False
            BATCH_SIZE: 100
            NET_E: '../DAMSMencoders/bird/text_encoder200.pth'
        GAN:
            DF_DIM: 64
            GF_DIM: 32
            Z_DIM: 100
            R_NUM: 2
        TEXT:
            EMBEDDING_DIM: 256
            CAPTIONS_PER_IMAGE: 10
            WORDS_NUM: 25
        """))
    cfg = config.load(path)
    assert (cfg.GPU_ID, cfg.TREE.BRANCH_NUM, cfg.TRAIN.NET_G, cfg.B_VALIDATION) == (3, 2, "../models/bird_AttnGAN2.pth", True)


@pytest.mark.parametrize("overrides, key", [
    ({"GAN.FOO": 1}, "GAN.FOO"),
    ({"BAR": 1}, "BAR"),
    ({"GAN.GF_DIM": "32"}, "GAN.GF_DIM"),
    ({"GAN.GF_DIM": 32.0}, "GAN.GF_DIM"),
    ({"TRAIN.FLAG": 1}, "TRAIN.FLAG"),
    ({"TRAIN.SMOOTH.GAMMA1": "4"}, "TRAIN.SMOOTH.GAMMA1"),
    ({"TRAIN.SMOOTH": 3}, "TRAIN.SMOOTH"),
    ({"GAN.MASK_MODE": "sometimes"}, "GAN.MASK_MODE"),
    ({"RNN_TYPE": "Transformer"}, "RNN_TYPE"),
    ({"TREE.BRANCH_NUM": 4}, "TREE.BRANCH_NUM"),
    ({"TRAIN.BATCH_SIZE": 0}, "TRAIN.BATCH_SIZE"),
    ({"GAN.R_NUM": -1}, "GAN.R_NUM"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        config.load("bird_attn2", **overrides)


def test_bad_file_names_the_key_and_file(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("GAN:\n  GF_DIMM: 32\n")
    with pytest.raises(ValueError, match=r"GAN\.GF_DIMM.*bad\.yml"):
        config.load(path)


def test_unknown_name():
    with pytest.raises(ValueError, match="no_such_config"):
        config.load("no_such_config")


def test_extension_sections_damsm_and_synthetic():
    cfg = config.load("synthetic_birds")
    assert cfg.DAMSM.IMAGE_ENCODER == "small_cnn" and cfg.DATASET_NAME == "synthetic_birds"
    assert config.defaults().DAMSM.IMAGE_ENCODER == "inception_v3"
    assert config.load("DAMSM/bird").DAMSM.INCEPTION_WEIGHTS == ""
    with pytest.raises(ValueError, match="SYNTHETIC.TEST_FRACTION"):
        config.load("synthetic_birds", **{"SYNTHETIC.TEST_FRACTION": 1.5})
    with pytest.raises(ValueError, match="DAMSM.SMALL_CNN_WIDTH"):
        config.load("synthetic_birds", **{"DAMSM.SMALL_CNN_WIDTH": 0})
    assert config.from_dict(cfg.to_dict()) == cfg
