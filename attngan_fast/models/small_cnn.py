"""A light DAMSM image encoder for CPUs and synthetic data (an attngan_fast extension).

Drop-in for :class:`~attngan_fast.models.CNN_ENCODER`: same call, same outputs (region features and
a global code of ``nef`` dims; the heads keep CNN_ENCODER's names and init), but a small CNN trained
from scratch instead of a frozen Inception-v3. Chosen with ``DAMSM.IMAGE_ENCODER: small_cnn``.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .blocks import conv1x1

__all__ = ["SmallImageEncoder"]


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallImageEncoder(nn.Module):
    """Six 3x3 conv-BN-ReLU layers; regions after three stride-2 steps, the global code after four.

    nef: output dims; width: channels of the first stage (then 2x, 4x, 8x); input_size: inputs are
    resized (bilinear, as CNN_ENCODER resizes to 299) to ``input_size`` x ``input_size``.
    ``features`` and ``global_features`` hold the trunk; ``emb_features`` (conv1x1 4w → nef, no bias)
    and ``emb_cnn_code`` (Linear 8w → nef) are the heads, initialised uniform(-0.1, 0.1) like
    CNN_ENCODER's.
    """

    def __init__(self, nef: int, width: int = 32, input_size: int = 64) -> None:
        super().__init__()
        if input_size % 16 != 0:
            raise ValueError(f"input_size: expected a multiple of 16, got {input_size}")
        self.nef = nef
        self.input_size = input_size
        w = width
        self.features = nn.Sequential(
            _conv_bn_relu(3, w, 2), _conv_bn_relu(w, w, 1),
            _conv_bn_relu(w, 2 * w, 2), _conv_bn_relu(2 * w, 2 * w, 1),
            _conv_bn_relu(2 * w, 4 * w, 2),
        )
        self.global_features = _conv_bn_relu(4 * w, 8 * w, 2)
        self.emb_features = conv1x1(4 * w, nef)
        self.emb_cnn_code = nn.Linear(8 * w, nef)
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, 3, H, W) in [-1, 1].

        Returns region features (B, nef, input_size/8, input_size/8) and cnn_code (B, nef).
        """
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"x: expected (B, 3, H, W), got {tuple(x.shape)}")
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        regions = self.features(x)
        code = self.global_features(regions).mean(dim=(2, 3))
        return self.emb_features(regions), self.emb_cnn_code(code)
