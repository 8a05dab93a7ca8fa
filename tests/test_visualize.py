"""Pictures: grids and the attention figure (layout, labels, scaling)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attngan_fast.visualize import attention_figure, image_grid, to_pil


def test_to_pil_and_grid():
    img = torch.full((3, 4, 5), -1.0)
    img[0] = 1.0  # pure red
    pil = to_pil(img)
    assert pil.size == (5, 4) and pil.getpixel((0, 0)) == (255, 0, 0)
    grid = image_grid(torch.stack([img] * 5), nrow=2, padding=1)
    assert grid.size == (2 * 6 + 1, 3 * 5 + 1)
    assert grid.getpixel((1, 1)) == (255, 0, 0) and grid.getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        image_grid(img)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_pil(img[:2])


def test_attention_figure_layout_and_maps():
    images = [torch.zeros(3, 64, 64), torch.zeros(3, 128, 128)]
    att = torch.zeros(5, 64, 64)
    att[0, :32] = 1.0  # word 0 attends to the top half
    att[1, :, 32:] = 1.0  # word 1 to the right half
    fig = attention_figure(images, [att], ["red", "wings"], cell_size=32)
    assert fig.size == (3 * 32, 32 + 14)
    pixels = np.asarray(fig).astype(int)
    word0, word1 = pixels[:32, 32:64], pixels[:32, 64:96]
    assert word0[:12].mean() > word0[20:].mean() + 30  # lit where attended
    assert word1[:, 20:].mean() > word1[:, :12].mean() + 30
    labelled = attention_figure(images[:1], [att, att], ["red"], cell_size=16, labels=["a", "b"])
    assert labelled.size == (2 * 16, 2 * (16 + 14))
    assert attention_figure(images, [], ["red"], cell_size=16).size == (16, 16 + 14)
    with pytest.raises(ValueError, match="attention"):
        attention_figure(images, [att[:1]], ["red", "wings"])
