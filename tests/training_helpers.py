"""Tiny stand-ins for the training tests: a caption data set in the loader's item format, a small
image encoder with DAMSM's outputs, a tiny 2-stage configuration (64 + 128 px, attention), and files
of that configuration as the original AttnGAN saves them."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torch.utils.data import Dataset

from attngan_fast import config
from attngan_fast.data import Sample
from attngan_fast.data.text import CaptionsPickle, Vocabulary, save_captions_pickle
from attngan_fast.models import G_NET, RNN_ENCODER, weights_init

N_WORDS = 12
# the vocabulary of write_tiny_original_files' captions.pickle
ORIGINAL_WORDS = ["a", "bird", "with", "red", "blue", "wings", "and", "belly", "white", "black"]


@contextlib.contextmanager
def single_thread():
    """Tiny models run fastest on one thread, and a shared 2-core machine thrashes with more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_cfg(**overrides) -> config.Config:
    base = {
        "TREE.BRANCH_NUM": 2, "GAN.GF_DIM": 2, "GAN.DF_DIM": 2, "GAN.Z_DIM": 6, "GAN.CONDITION_DIM": 5,
        "GAN.R_NUM": 1, "TEXT.EMBEDDING_DIM": 8, "TEXT.WORDS_NUM": 6, "TRAIN.BATCH_SIZE": 3,
        "TRAIN.SMOOTH.LAMBDA": 5.0, "WORKERS": 0,
    }
    return config.load("bird_attn2", **{**base, **overrides})


class TinyCaptionDataset(Dataset):
    """``n`` random :class:`~attngan_fast.data.Sample` items, a pure function of the index (so any
    process loads the same item)."""

    def __init__(self, cfg: config.Config, n: int = 12, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        sizes = [cfg.TREE.BASE_SIZE * 2**i for i in range(cfg.TREE.BRANCH_NUM)]
        base = torch.rand(n, 3, sizes[-1], sizes[-1], generator=g) * 2 - 1
        self.imgs = [F.interpolate(base, size=(s, s), mode="bilinear", align_corners=False) for s in sizes]
        words = cfg.TEXT.WORDS_NUM
        self.lens = torch.randint(2, words + 1, (n,), generator=g)
        self.caps = torch.zeros(n, words, dtype=torch.int64)
        for i in range(n):
            self.caps[i, : self.lens[i]] = torch.randint(1, N_WORDS, (int(self.lens[i]),), generator=g)
        self.class_ids = torch.arange(n) % 4
        self.ixtoword = {0: "<end>", **{i: f"w{i}" for i in range(1, N_WORDS)}}
        self.wordtoix = {w: i for i, w in self.ixtoword.items()}

    def __len__(self) -> int:
        return len(self.lens)

    def __getitem__(self, i: int):
        return Sample([im[i] for im in self.imgs], self.caps[i], int(self.lens[i]), int(self.class_ids[i]), f"key{i}")


class TinyImageEncoder(nn.Module):
    """images (B, 3, S, S) -> region features (B, E, 4, 4) and a global code (B, E)."""

    def __init__(self, nef: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, nef, 3, stride=2, padding=1)
        self.code = nn.Linear(nef, nef)

    def forward(self, x):
        h = F.adaptive_avg_pool2d(torch.tanh(self.conv(x)), 4)
        return h, self.code(h.mean((2, 3)))


def tiny_encoders(cfg: config.Config, seed: int = 1) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return RNN_ENCODER(N_WORDS, cfg, ninput=8), TinyImageEncoder(cfg.TEXT.EMBEDDING_DIM)


def make_trainer(tmp_path, cfg=None, n=12, **options):
    """A GANTrainer on the tiny data set, writing to ``tmp_path``."""
    from attngan_fast.training import GANTrainer, TrainOptions

    cfg = cfg or tiny_cfg()
    dataset = TinyCaptionDataset(cfg, n=n)
    text_encoder, image_encoder = tiny_encoders(cfg)
    opts = TrainOptions(**{"out_dir": str(tmp_path), "seed": 3, "progress": False, "sample_every": 0, **options})
    return GANTrainer(cfg, dataset, text_encoder, image_encoder, opts, ixtoword=dataset.ixtoword)


def ddp_worker(rank: int, world_size: int, port: int, out_dir: str, options: dict, cfg_overrides: dict) -> None:
    """One torchrun-like process of a gloo DDP run on the tiny data set (for torch.multiprocessing.spawn)."""
    import os

    from attngan_fast.training import GANTrainer, TrainOptions, init_distributed

    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    info = init_distributed("cpu")
    cfg = tiny_cfg(**cfg_overrides)
    dataset = TinyCaptionDataset(cfg, n=12)
    text_encoder, image_encoder = tiny_encoders(cfg)
    opts = TrainOptions(**{"out_dir": out_dir, "seed": 3, "progress": False, "sample_every": 0, **options})
    trainer = GANTrainer(cfg, dataset, text_encoder, image_encoder, opts, ixtoword=dataset.ixtoword, dist_info=info)
    trainer.train()
    import torch.distributed as dist

    dist.destroy_process_group()


def single_worker(_: int, out_dir: str, options: dict, cfg_overrides: dict) -> None:
    """The one-process twin of :func:`ddp_worker` (for ``torch.multiprocessing.spawn``, nprocs=1):
    a fresh process, as the DDP ranks are. (In the test process, oneDNN may reuse convolution
    primitives made earlier under another thread count, whose float sums differ in the last bit.)"""
    torch.set_num_threads(1)
    make_trainer(out_dir, cfg=tiny_cfg(**cfg_overrides), **options).train()


def synthetic_run_files(tmp_path, **overrides):
    """A tiny synthetic-birds GAN config file and untrained DAMSM encoder files for it.

    Returns (config path, config, text encoder path).
    """
    import yaml

    from attngan_fast.data import build_dataset
    from attngan_fast.training.damsm import build_image_encoder, build_text_encoder

    base = {"SYNTHETIC.NUM_IMAGES": 50, "TREE.BRANCH_NUM": 2, "TRAIN.BATCH_SIZE": 4, "TRAIN.MAX_EPOCH": 2,
            "TRAIN.SNAPSHOT_INTERVAL": 1, "TRAIN.GENERATOR_LR": 4e-4, "TRAIN.DISCRIMINATOR_LR": 4e-4,
            "GAN.GF_DIM": 2, "GAN.DF_DIM": 2, "GAN.Z_DIM": 6, "GAN.CONDITION_DIM": 5, "TEXT.EMBEDDING_DIM": 8,
            "DAMSM.SMALL_CNN_WIDTH": 4, "DAMSM.SMALL_CNN_INPUT": 32}
    cfg = config.load("demo_birds", **{**base, **overrides})
    n_words = build_dataset(cfg, "train", seed=0).n_words
    torch.manual_seed(0)
    model = tmp_path / "damsm" / "Model"
    model.mkdir(parents=True)
    torch.save(build_text_encoder(cfg, n_words).state_dict(), model / "text_encoder0.pth")
    torch.save(build_image_encoder(cfg).state_dict(), model / "image_encoder0.pth")
    cfg = cfg.replace(**{"TRAIN.NET_E": str(model / "text_encoder0.pth")})
    path = tmp_path / "tiny_birds.yml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    return path, cfg, model / "text_encoder0.pth"


def write_tiny_original_files(out: Path) -> tuple[dict[str, Path], Any, Any, config.Config]:
    """netG_epoch_600.pth, text_encoder200.pth, captions.pickle and a config file in ``out``, as the
    original AttnGAN saved them (bare state_dicts), from freshly built tiny models; returns
    (paths by role, netG, text encoder, cfg)."""
    cfg = tiny_cfg()
    vocab = Vocabulary.from_words(ORIGINAL_WORDS)
    torch.manual_seed(0)
    netG = G_NET(cfg)
    netG.apply(weights_init)
    for m in netG.modules():  # non-trivial running statistics (eval mode uses them)
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    encoder = RNN_ENCODER(vocab.n_words, cfg, ninput=12)
    paths = {"netG": out / "netG_epoch_600.pth", "text_encoder": out / "text_encoder200.pth",
             "captions": out / "captions.pickle", "cfg": out / "tiny.yml"}
    torch.save(netG.state_dict(), paths["netG"])
    torch.save(encoder.state_dict(), paths["text_encoder"])
    save_captions_pickle(paths["captions"], CaptionsPickle([[2, 4, 6]], [[2, 5]], vocab))
    paths["cfg"].write_text(yaml.safe_dump(cfg.to_dict()))
    return paths, netG, encoder, cfg
