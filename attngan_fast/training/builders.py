"""G and the Ds of a config, initialised as the original (``weights_init``)."""
from __future__ import annotations

import torch.nn as nn

from ..config import Config
from ..models import D_NET64, D_NET128, D_NET256, G_DCGAN, G_NET, weights_init

__all__ = ["build_generator", "build_discriminators"]


def build_generator(cfg: Config) -> nn.Module:
    """G_NET (or G_DCGAN when ``GAN.B_DCGAN``), initialised as the original (weights_init)."""
    netG = G_DCGAN(cfg) if cfg.GAN.B_DCGAN else G_NET(cfg)
    netG.apply(weights_init)
    return netG


def build_discriminators(cfg: Config) -> list[nn.Module]:
    """One D per stage (64/128/256 px), or for G_DCGAN one D of the final size without the
    unconditional head; initialised with weights_init."""
    classes = (D_NET64, D_NET128, D_NET256)
    if cfg.GAN.B_DCGAN:
        netsD = [classes[cfg.TREE.BRANCH_NUM - 1](cfg, b_jcu=False)]
    else:
        netsD = [cls(cfg) for cls in classes[: cfg.TREE.BRANCH_NUM]]
    for netD in netsD:
        netD.apply(weights_init)
    return netsD
