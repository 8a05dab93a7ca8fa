"""Pictures: image grids and the paper's attention figure (word attention maps over the image).

Images are tensors in [-1, 1] (the generator's tanh range). Text is drawn with Pillow's default
font (no font file is read or downloaded).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

__all__ = ["to_pil", "image_grid", "attention_figure", "stack_vertically", "write_sample_pictures"]

_LABEL_HEIGHT = 14
_BACKGROUND = (255, 255, 255)


def _to_uint8(images: Tensor) -> Tensor:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8 on the CPU."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).contiguous()


def to_pil(image: Tensor) -> Image.Image:
    """image: (3, H, W) in [-1, 1] -> RGB PIL image."""
    if image.dim() != 3 or image.size(0) != 3:
        raise ValueError(f"image: expected (3, H, W), got {tuple(image.shape)}")
    return Image.fromarray(_to_uint8(image).numpy(), "RGB")


def image_grid(images: Tensor, nrow: Optional[int] = None, padding: int = 2) -> Image.Image:
    """images: (N, 3, H, W) in [-1, 1] -> one RGB image, ``nrow`` images per row (default ~sqrt(N))."""
    if images.dim() != 4 or images.size(1) != 3:
        raise ValueError(f"images: expected (N, 3, H, W), got {tuple(images.shape)}")
    n, _, h, w = images.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    grid = Image.new("RGB", (nrow * (w + padding) + padding, rows * (h + padding) + padding), _BACKGROUND)
    pixels = _to_uint8(images).numpy()
    for i in range(n):
        r, c = divmod(i, nrow)
        grid.paste(Image.fromarray(pixels[i], "RGB"), (padding + c * (w + padding), padding + r * (h + padding)))
    return grid


def _cell_with_label(picture: Image.Image, label: str, font: ImageFont.ImageFont) -> Image.Image:
    cell = Image.new("RGB", (picture.width, picture.height + _LABEL_HEIGHT), _BACKGROUND)
    cell.paste(picture, (0, 0))
    draw = ImageDraw.Draw(cell)
    text_width = draw.textlength(label, font=font)
    draw.text((max(0.0, (picture.width - text_width) / 2), picture.height + 1), label, fill=(0, 0, 0), font=font)
    return cell


def attention_figure(
    images: Sequence[Tensor],
    attention: Sequence[Tensor],
    words: Sequence[str],
    cell_size: int = 128,
    labels: Optional[Sequence[str]] = None,
) -> Image.Image:
    """The paper's attention visualisation for one generated sample.

    images: the sample's image per stage, each (3, S_i, S_i) in [-1, 1].
    attention: the word attention of each attention stage, each (T, h_j, w_j) (stage j + 2 of
        G_NET attends over stage j + 1's features; T >= len(words)).
    words: the caption's words (their attention rows come first).
    labels: the first cell's caption per row (default "stage {j + 2}").

    One row per attention stage: the image that stage produced, then for every word that image
    lit by the word's attention map (upsampled, scaled to its maximum), the word written under it.
    A model without attention stages (``attention`` empty) gives one row with the final image.
    With a single stage image, every row shows that image (e.g. DAMSM's word attention over it).
    """
    if not images:
        raise ValueError("images: expected at least one stage image")
    font = ImageFont.load_default()
    rows: list[list[Image.Image]] = []
    stage_images = list(images)
    if not attention:
        final = stage_images[-1]
        rows.append([_cell_with_label(_resized(final, cell_size), f"{final.size(-1)}px", font)])
    for j, att in enumerate(attention):
        if att.dim() != 3 or att.size(0) < len(words):
            raise ValueError(f"attention[{j}]: expected (T >= {len(words)}, h, w), got {tuple(att.shape)}")
        image = stage_images[min(j + 1, len(stage_images) - 1)]
        base = _resized(image, cell_size)
        row = [_cell_with_label(base, labels[j] if labels else f"stage {j + 2}", font)]
        maps = F.interpolate(att[: len(words)].detach().float().cpu().unsqueeze(0), size=(cell_size, cell_size),
                             mode="bilinear", align_corners=False)[0]
        maps = maps / maps.amax(dim=(1, 2), keepdim=True).clamp(min=1e-12)
        rgb = F.interpolate(image.detach().float().cpu().unsqueeze(0), size=(cell_size, cell_size),
                            mode="bilinear", align_corners=False)[0]
        for w, word in enumerate(words):
            lit = (rgb.clamp(-1, 1) + 1) * (0.15 + 0.85 * maps[w]) - 1  # dark where the word is not attended
            row.append(_cell_with_label(to_pil(lit), word, font))
        rows.append(row)
    width = max(sum(c.width for c in row) for row in rows)
    height = sum(row[0].height for row in rows)
    figure = Image.new("RGB", (width, height), _BACKGROUND)
    y = 0
    for row in rows:
        x = 0
        for cell in row:
            figure.paste(cell, (x, y))
            x += cell.width
        y += row[0].height
    return figure


def _resized(image: Tensor, size: int) -> Image.Image:
    return to_pil(image).resize((size, size), Image.Resampling.BILINEAR)


def stack_vertically(images: Sequence[Image.Image]) -> Image.Image:
    """The pictures one below the other on white, as wide as the widest."""
    width = max(im.width for im in images)
    out = Image.new("RGB", (width, sum(im.height for im in images)), (255, 255, 255))
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height
    return out


def write_sample_pictures(folder: Path, tag: str, fakes: Sequence[Tensor], atts: Sequence[Tensor],
                          captions: Sequence[Sequence[str]], max_figures: int = 4) -> list[Path]:
    """``{tag}_g{i}.png``: a grid of stage i's images (N, 3, S, S) per stage, and
    ``{tag}_attention.png``: the attention figures (atts: (N, T, h, w) per attention stage) of the
    first ``max_figures`` samples, whose words are ``captions[s]``. Returns the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, images in enumerate(fakes):
        paths.append(folder / f"{tag}_g{i}.png")
        image_grid(images).save(paths[-1])
    figures = [attention_figure([f[s] for f in fakes], [a[s] for a in atts], list(captions[s]))
               for s in range(min(len(captions), max_figures))]
    paths.append(folder / f"{tag}_attention.png")
    stack_vertically(figures).save(paths[-1])
    return paths
