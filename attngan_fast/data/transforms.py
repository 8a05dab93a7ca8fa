"""Image pipeline of the original (docs/original_attngan.md §8.4): bbox crop, resize, random crop, flip, multi-scale.

Randomness comes from an explicit ``numpy.random.Generator`` (never a global RNG), so a sample
depends only on the seed it is given.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import Tensor

__all__ = ["bbox_crop", "to_tensor", "ImageTransform"]


def bbox_crop(img: Image.Image, bbox: Sequence[int]) -> Image.Image:
    """The original birds crop: a square of side 1.5 x the longer bbox side around its centre.

    bbox: (x, y, w, h) ints. ``r = int(0.75 * max(w, h))``, centre ``(int(x + w/2), int(y + h/2))``,
    the box ``[cx - r, cy - r, cx + r, cy + r]`` clipped to the image.
    """
    width, height = img.size
    x, y, w, h = bbox
    r = int(np.maximum(w, h) * 0.75)
    center_x = int((2 * x + w) / 2)
    center_y = int((2 * y + h) / 2)
    y1, y2 = max(0, center_y - r), min(height, center_y + r)
    x1, x2 = max(0, center_x - r), min(width, center_x + r)
    return img.crop((x1, y1, x2, y2))


def to_tensor(img: Image.Image) -> Tensor:
    """RGB PIL image → (3, H, W) float32 in [-1, 1] (``ToTensor`` then ``Normalize(0.5, 0.5)``)."""
    array = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.uint8).copy())
    return array.permute(2, 0, 1).float().div_(127.5).sub_(1.0)


class ImageTransform:
    """``Resize(int(S * 76 / 64))`` (shorter side) → crop S → flip → one image per stage.

    S = ``base_size * 2 ** (branch_num - 1)``; stage i < last is the S crop resized to
    ``base_size * 2 ** i``. augment=True (the original, also for the test split): random crop and
    random horizontal flip (p = 0.5); augment=False: centre crop, no flip.

    ``transform(img, rng)`` → list of ``branch_num`` tensors (3, s_i, s_i) in [-1, 1].
    """

    def __init__(self, base_size: int, branch_num: int, augment: bool = True) -> None:
        if base_size < 1 or branch_num < 1:
            raise ValueError(f"base_size and branch_num must be >= 1, got {base_size}, {branch_num}")
        self.imsize = [base_size * 2**i for i in range(branch_num)]
        self.crop_size = self.imsize[-1]
        self.load_size = int(self.crop_size * 76 / 64)
        self.augment = augment

    def __call__(self, img: Image.Image, rng: np.random.Generator) -> list[Tensor]:
        img = TF.resize(img, self.load_size)
        width, height = img.size
        size = self.crop_size
        if self.augment:
            top = int(rng.integers(0, height - size + 1))
            left = int(rng.integers(0, width - size + 1))
            flip = bool(rng.random() < 0.5)
        else:
            top, left, flip = (height - size) // 2, (width - size) // 2, False
        img = img.crop((left, top, left + size, top + size))
        if flip:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        stages = [TF.resize(img, s) for s in self.imsize[:-1]] + [img]
        return [to_tensor(im) for im in stages]
