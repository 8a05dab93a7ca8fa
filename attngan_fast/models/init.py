"""Weight initialisation of G and every D (original ``miscc/utils.weights_init``)."""
from __future__ import annotations

import torch.nn as nn

__all__ = ["weights_init"]


def weights_init(m: nn.Module) -> None:
    """Use as ``net.apply(weights_init)``. Dispatches on the class *name*, as the original:

    * name contains "Conv": orthogonal weight (gain 1); the bias is left as is.
    * "BatchNorm": weight ~ N(1, 0.02), bias 0.
    * "Linear": orthogonal weight, bias 0 (if any).

    Subclasses of the blocks keep working as long as their names avoid these words.
    """
    classname = type(m).__name__
    if "Conv" in classname:
        nn.init.orthogonal_(m.weight.data, 1.0)
    elif "BatchNorm" in classname:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)
    elif "Linear" in classname:
        nn.init.orthogonal_(m.weight.data, 1.0)
        if m.bias is not None:
            m.bias.data.fill_(0.0)
