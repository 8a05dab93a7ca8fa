"""Training loops: DAMSM pre-training (``damsm``) and the GAN (``gan``, spec §7.1) with its snapshots
and distributed plumbing."""
from .checkpoint import export_original_netG, find_latest, load_snapshot
from .distributed import DistInfo, init_distributed
from .gan import GANTrainer, TrainOptions, build_discriminators, build_generator, collate_shards, train_gan

__all__ = [
    "DistInfo",
    "GANTrainer",
    "TrainOptions",
    "build_discriminators",
    "build_generator",
    "collate_shards",
    "export_original_netG",
    "find_latest",
    "init_distributed",
    "load_snapshot",
    "train_gan",
]
