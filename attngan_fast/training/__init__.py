"""Training: DAMSM pre-training (:mod:`.damsm`) and the GAN (:mod:`.trainer`, docs/original_attngan.md §7.1).

Modules: :mod:`.options` (how a run is driven), :mod:`.builders` (G and the Ds), :mod:`.wrappers`
(autocast / DDP wrappers of the step), :mod:`.trainer` (the loop), :mod:`.snapshots` (save and
resume a trainer) over :mod:`attngan_fast.checkpoint` (the snapshot file format), :mod:`.run_folder` (refusing
a reused output folder, the lock), :mod:`.stop` (SIGINT / SIGTERM), :mod:`.distributed`.
"""
from ..checkpoint import export_original_netG, find_latest, load_snapshot
from .builders import build_discriminators, build_generator
from .distributed import DistInfo, init_distributed
from .options import TrainOptions
from .run_folder import RunFolderError
from .trainer import GANTrainer, NonFiniteLossError, collate_shards, train_gan

__all__ = ["DistInfo", "GANTrainer", "NonFiniteLossError", "RunFolderError", "TrainOptions", "build_discriminators",
           "build_generator", "collate_shards", "export_original_netG", "find_latest", "init_distributed",
           "load_snapshot", "train_gan"]
