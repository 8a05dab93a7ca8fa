"""Synthetic birds: procedural Pillow drawings with CUB-style captions, for data-free runs.

Each image ``g`` (a global index; the first ``num_images - num_test`` are the train split, the
rest the test split) gets attributes drawn from ``numpy.random.default_rng([seed, g])``: wing, belly
and head colour (10 colours each), beak short/long, size small/large, background kind, facing
left/right, plus small jitters of position, perch and colours. The image is a stylised bird (tail,
body, wing, head, eye, beak, legs) on a perch in front of a background; its 10 captions are drawn
from 16 CUB-style templates with synonyms, and every one names the wing and the belly colour.
The class id is the (wing, belly) pair: ``1 + 10 * wing + belly`` (1..100, 1-based like CUB's).
Captions never mention the facing direction, so horizontal flips keep image and caption consistent.

:class:`SyntheticBirds` is a :class:`~attngan_fast.data.CaptionDataset` (same items, same
vocabulary format as :class:`~attngan_fast.data.TextDataset`; its vocabulary is fixed, the same for
any size or seed); :meth:`SyntheticBirds.attributes` gives the ground truth of a sample.
:func:`write_birds_layout` (``attngan-fast make-synthetic DIR --n N``) writes the set in the birds
layout, which ``TextDataset`` reads back as the same captions, ids, classes and (up to JPEG loss)
images.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..io import atomic_pickle_dump, atomic_write_json, atomic_write_text
from .base import CaptionDataset
from .text import CaptionsPickle, Vocabulary, save_captions_pickle, tokenize

__all__ = ["COLOURS", "BACKGROUNDS", "ATTRIBUTE_CLASSES", "BirdAttributes", "SyntheticBirds", "render_bird",
           "sample_attributes", "bird_captions", "named_attributes", "synthetic_vocabulary", "write_birds_layout",
           "read_attributes"]

COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (25, 25, 25), "white": (245, 245, 240), "red": (205, 30, 35), "blue": (35, 75, 205),
    "yellow": (245, 215, 35), "green": (45, 150, 55), "brown": (125, 75, 35), "orange": (245, 135, 20),
    "grey": (135, 135, 135), "purple": (125, 45, 160),
}
COLOUR_NAMES = tuple(COLOURS)
# (top, bottom) colours of a vertical gradient, all pale so that every bird colour stands out
BACKGROUNDS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "sky": ((150, 195, 235), (215, 235, 250)), "foliage": ((165, 205, 150), (205, 230, 190)),
    "sand": ((235, 220, 185), (215, 195, 150)), "dusk": ((235, 185, 170), (245, 220, 200)),
    "fog": ((205, 205, 215), (230, 230, 235)),
}
_BEAK = {"short": ("short", "stubby"), "long": ("long", "slender")}
_SIZE = {"small": ("small", "tiny", "little"), "large": ("large", "big")}
_TEMPLATES = (
    "this bird has wings that are {wing} and a {belly} belly",
    "a {size} bird with a {belly} belly, {wing} wings and a {beak} beak",
    "this {size} bird has a {head} head, {wing} wings and a {belly} belly",
    "the bird has a {belly} breast and belly and {wing} wing feathers",
    "a bird with {wing} wings, a {belly} belly and a {head} crown",
    "this bird has a {beak} beak, a {head} head, a {belly} belly and {wing} wings",
    "{belly} bellied bird with {wing} wings and a {beak} bill",
    "a {size} bird with a {head} crown, a {belly} breast and {wing} secondaries",
    "this is a {size} bird with {wing} wings and a {belly} belly",
    "the wings of this bird are {wing} and its belly is {belly}",
    "a {wing} winged bird with a {belly} belly and a {beak} pointed beak",
    "this bird has a {belly} abdomen, {wing} primaries and a {head} head",
    "a bird with a {belly} belly and {wing} wings that has a {beak} beak",
    "this {size} bird is mostly {belly} with {wing} wings",
    "the bird has {wing} wings, a {head} nape and a {belly} throat and belly",
    "a {size} bird with {wing} wing feathers and a {belly} belly and breast",
)
CAPTIONS_PER_IMAGE = 10
# every attribute a bird is drawn with, and its number of classes (SyntheticBirds.attribute_array)
ATTRIBUTE_CLASSES = {"wing": len(COLOURS), "belly": len(COLOURS), "head": len(COLOURS), "beak": 2, "size": 2,
                     "background": len(BACKGROUNDS), "facing": 2}
# the words by which a caption names an attribute besides wing and belly (which every caption names)
_NAMING_WORDS = {"head": frozenset({"head", "crown", "nape"}),
                 "beak": frozenset(w for syn in _BEAK.values() for w in syn),
                 "size": frozenset(w for syn in _SIZE.values() for w in syn)}


@dataclass(frozen=True)
class BirdAttributes:
    """Ground truth of one synthetic bird (colour fields are indices into :data:`COLOUR_NAMES`)."""

    wing: int
    belly: int
    head: int
    beak: str  # "short" | "long"
    size: str  # "small" | "large"
    background: str  # a key of BACKGROUNDS
    facing: str  # "left" | "right"
    dx: float  # centre offset, fraction of the image
    dy: float
    perch_tilt: float
    colour_jitter: tuple[int, int, int]

    @property
    def class_id(self) -> int:
        """``1 + 10 * wing + belly``."""
        return 1 + len(COLOURS) * self.wing + self.belly

    def names(self) -> dict[str, str]:
        """Readable attributes: ``{"wing": "blue", "belly": "red", "head": ..., "beak": ..., ...}``."""
        return {"wing": COLOUR_NAMES[self.wing], "belly": COLOUR_NAMES[self.belly], "head": COLOUR_NAMES[self.head],
                "beak": self.beak, "size": self.size, "background": self.background, "facing": self.facing}


def sample_attributes(seed: int, index: int) -> BirdAttributes:
    """The attributes of bird ``index`` of the set made with ``seed`` (deterministic)."""
    rng = np.random.default_rng([seed, index])
    n = len(COLOURS)
    return BirdAttributes(
        wing=int(rng.integers(n)), belly=int(rng.integers(n)), head=int(rng.integers(n)),
        beak=("short", "long")[rng.integers(2)], size=("small", "large")[rng.integers(2)],
        background=tuple(BACKGROUNDS)[rng.integers(len(BACKGROUNDS))], facing=("left", "right")[rng.integers(2)],
        dx=float(rng.uniform(-0.06, 0.06)), dy=float(rng.uniform(-0.05, 0.05)),
        perch_tilt=float(rng.uniform(-0.05, 0.05)),
        colour_jitter=tuple(int(v) for v in rng.integers(-12, 13, size=3)),
    )


def bird_captions(attrs: BirdAttributes, seed: int, index: int, count: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """``count`` captions of the bird, from distinct templates (deterministic in seed and index)."""
    rng = np.random.default_rng([seed, index, 1])
    names = attrs.names()
    out = []
    for t in rng.permutation(len(_TEMPLATES))[:count]:
        out.append(_TEMPLATES[t].format(
            wing=names["wing"], belly=names["belly"], head=names["head"],
            beak=_BEAK[attrs.beak][rng.integers(len(_BEAK[attrs.beak]))],
            size=_SIZE[attrs.size][rng.integers(len(_SIZE[attrs.size]))],
        ))
    return out


def named_attributes(words: Iterable[str]) -> tuple[str, ...]:
    """The attributes a synthetic caption (its words) names, in :data:`ATTRIBUTE_CLASSES` order:
    wing and belly always, head / beak / size when one of their words is there; never background
    or facing."""
    words = set(words)
    return ("wing", "belly") + tuple(name for name, naming in _NAMING_WORDS.items() if words & naming)


def synthetic_vocabulary() -> Vocabulary:
    """The fixed vocabulary of every synthetic caption (template words, then attribute words)."""
    words = [w for t in _TEMPLATES for w in tokenize(t.replace("{", " ").replace("}", " "))
             if w not in ("wing", "belly", "head", "beak", "size")]
    words += tokenize("wing belly head beak")
    words += list(COLOUR_NAMES) + [w for syn in (*_BEAK.values(), *_SIZE.values()) for w in syn]
    return Vocabulary.from_words(words)


def render_bird(attrs: BirdAttributes, size: int) -> Image.Image:
    """The bird drawn at ``size`` x ``size`` px (RGB), facing ``attrs.facing``.

    Shapes are drawn at 2x and downsampled (box filter) for smooth edges.
    """
    big = 2 * size
    scale = big  # unit coordinates → pixels
    img = Image.new("RGB", (big, big))
    draw = ImageDraw.Draw(img)
    top, bottom = BACKGROUNDS[attrs.background]
    grad = np.linspace(0.0, 1.0, big)[:, None]
    column = (np.asarray(top)[None] * (1 - grad) + np.asarray(bottom)[None] * grad).astype(np.uint8)
    img.paste(Image.fromarray(np.repeat(column[:, None, :], big, axis=1)))

    jitter = np.asarray(attrs.colour_jitter)

    def colour(index: int) -> tuple[int, int, int]:
        return tuple(int(v) for v in np.clip(np.asarray(COLOURS[COLOUR_NAMES[index]]) + jitter, 0, 255))

    s = 1.0 if attrs.size == "large" else 0.74
    cx, cy = 0.47 + attrs.dx, 0.50 + attrs.dy
    mirror = attrs.facing == "left"

    def pt(x: float, y: float) -> tuple[float, float]:
        """Bird coordinates (relative to the centre, in units of s) → pixels."""
        u, v = cx + x * s, cy + y * s
        return ((1.0 - u) if mirror else u) * scale, v * scale

    def box(x0: float, y0: float, x1: float, y1: float) -> list[float]:
        (a, b), (c, d) = pt(x0, y0), pt(x1, y1)
        return [min(a, c), min(b, d), max(a, c), max(b, d)]

    outline = (40, 35, 30)
    width = max(1, big // 96)
    # perch: a branch under the feet
    py = cy + 0.25 * s
    p0 = (0.0, (py - attrs.perch_tilt) * scale)
    p1 = (float(scale), (py + attrs.perch_tilt) * scale)
    draw.line([p0, p1], fill=(100, 65, 35), width=max(2, big // 22))
    # legs
    for lx in (-0.04, 0.05):
        draw.line([pt(lx, 0.14), pt(lx + 0.01, 0.25)], fill=(70, 55, 40), width=max(1, big // 64))
    # tail (wing colour), behind the body
    draw.polygon([pt(-0.18, -0.02), pt(-0.44, 0.08), pt(-0.42, 0.16), pt(-0.16, 0.09)],
                 fill=colour(attrs.wing), outline=outline)
    # body (belly colour)
    draw.ellipse(box(-0.27, -0.15, 0.21, 0.19), fill=colour(attrs.belly), outline=outline, width=width)
    # wing over the back
    draw.polygon([pt(-0.24, -0.09), pt(0.02, -0.14), pt(0.14, -0.07), pt(0.06, 0.04), pt(-0.16, 0.07),
                  pt(-0.30, 0.03)], fill=colour(attrs.wing), outline=outline)
    # head
    hx, hy = 0.19, -0.17
    draw.ellipse(box(hx - 0.105, hy - 0.105, hx + 0.105, hy + 0.105), fill=colour(attrs.head), outline=outline,
                 width=width)
    # beak
    length = 0.07 if attrs.beak == "short" else 0.17
    draw.polygon([pt(hx + 0.085, hy - 0.035), pt(hx + 0.085, hy + 0.035), pt(hx + 0.085 + length, hy + 0.01)],
                 fill=(60, 50, 45))
    # eye
    ex, ey = hx + 0.035, hy - 0.03
    draw.ellipse(box(ex - 0.03, ey - 0.03, ex + 0.03, ey + 0.03), fill=(250, 250, 250))
    draw.ellipse(box(ex - 0.015, ey - 0.015, ex + 0.015, ey + 0.015), fill=(10, 10, 10))
    return img.reduce(2)


class SyntheticBirds(CaptionDataset):
    """Synthetic birds as a dataset: the :class:`~attngan_fast.data.TextDataset` interface.

    num_images: size of the whole set; the last ``round(num_images * test_fraction)`` indices form
        the test split. data_seed: the set's content (attributes, captions); seed: the per-sample
        random draws (caption choice, crop, flip), as for every
        :class:`~attngan_fast.data.CaptionDataset`.
    Renders are cached in memory (``cache=True``): about ``3 * (1.19 * S)**2`` bytes per image for
    crops of S = ``base_size * 2**(branch_num - 1)`` px (17 kB at 64 px, 277 kB at 256 px).
    """

    def __init__(
        self,
        split: str = "train",
        *,
        num_images: int = 2500,
        test_fraction: float = 0.2,
        base_size: int = 64,
        branch_num: int = 1,
        words_num: int = 18,
        captions_per_image: int = CAPTIONS_PER_IMAGE,
        data_seed: int = 0,
        seed: Optional[int] = None,
        augment: bool = True,
        wrong_images: bool = False,
        cache: bool = True,
    ) -> None:
        super().__init__(split=split, base_size=base_size, branch_num=branch_num, words_num=words_num,
                         seed=seed, augment=augment, wrong_images=wrong_images)
        if not 1 <= captions_per_image <= len(_TEMPLATES):
            raise ValueError(f"captions_per_image: expected 1..{len(_TEMPLATES)}, got {captions_per_image}")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction: expected 0 <= value < 1, got {test_fraction}")
        self.num_images = int(num_images)
        self.num_test = int(round(num_images * test_fraction))
        self.data_seed = int(data_seed)
        self.render_size = self.transform.load_size
        first, last = (0, self.num_images - self.num_test) if split == "train" else (
            self.num_images - self.num_test, self.num_images)
        self.indices = list(range(first, last))  # global indices of this split
        self._attributes = [sample_attributes(self.data_seed, g) for g in self.indices]
        self.vocab = synthetic_vocabulary()
        self.filenames = [_key(a, g) for a, g in zip(self._attributes, self.indices)]
        self.text = [bird_captions(a, self.data_seed, g, captions_per_image)
                     for a, g in zip(self._attributes, self.indices)]
        self.captions = [[self.vocab.encode(c)[0] for c in caps] for caps in self.text]
        self.class_ids = np.asarray([a.class_id for a in self._attributes], dtype=np.int64)
        self._cache: Optional[dict[int, np.ndarray]] = {} if cache else None
        self._check()

    @classmethod
    def from_config(cls, cfg: Any, split: str = "train", **kwargs: Any) -> "SyntheticBirds":
        """Sizes from ``cfg.TREE``/``cfg.TEXT``, the set from ``cfg.SYNTHETIC``."""
        params = dict(num_images=cfg.SYNTHETIC.NUM_IMAGES, test_fraction=cfg.SYNTHETIC.TEST_FRACTION,
                      data_seed=cfg.SYNTHETIC.SEED, base_size=cfg.TREE.BASE_SIZE, branch_num=cfg.TREE.BRANCH_NUM,
                      words_num=cfg.TEXT.WORDS_NUM, captions_per_image=cfg.TEXT.CAPTIONS_PER_IMAGE)
        params.update(kwargs)
        return cls(split, **params)

    def attributes(self, index: int) -> BirdAttributes:
        """Ground truth of image ``index`` of this split."""
        return self._attributes[index]

    def attribute_array(self, name: str) -> np.ndarray:
        """One attribute for the whole split, (N,) int64 (colours as indices, else 0/1 as listed)."""
        values = [getattr(a, name) for a in self._attributes]
        if name in ("wing", "belly", "head"):
            return np.asarray(values, dtype=np.int64)
        choices = {"beak": ("short", "long"), "size": ("small", "large"), "facing": ("left", "right"),
                   "background": tuple(BACKGROUNDS)}[name]
        return np.asarray([choices.index(v) for v in values], dtype=np.int64)

    def variant_images(self, index: int, keep: Sequence[str], count: int, seed: int = 0) -> Tensor:
        """(count, 3, S, S) images (the last stage, the split's transform) of ``count`` new birds that
        share the attributes ``keep`` with image ``index``, all else drawn afresh as the set draws it
        (the real counterpart of ``count`` samples for one caption)."""
        unknown = [k for k in keep if k not in ATTRIBUTE_CLASSES]
        if unknown:
            raise ValueError(f"keep: unknown attributes {unknown}; expected some of {tuple(ATTRIBUTE_CLASSES)}")
        base = self._attributes[index]
        rng = np.random.default_rng([self.data_seed, seed, self.indices[index], 2])
        images = []
        for j in range(count):
            fresh = sample_attributes(self.data_seed, self.num_images + count * self.indices[index] + j)
            attrs = replace(fresh, **{k: getattr(base, k) for k in keep})
            images.append(self.transform(Image.fromarray(np.asarray(render_bird(attrs, self.render_size))), rng)[-1])
        return torch.stack(images)

    def render(self, index: int) -> np.ndarray:
        """(R, R, 3) uint8 render of image ``index`` before crop (R = ``render_size``), cached."""
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        array = np.asarray(render_bird(self._attributes[index], self.render_size))
        if self._cache is not None:
            self._cache[index] = array
        return array

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.render(index))


def _key(attrs: BirdAttributes, index: int) -> str:
    names = attrs.names()
    return f"{attrs.class_id:03d}.{names['wing']}_wing_{names['belly']}_belly/synthetic_{index:06d}"


# what write_birds_layout writes under its folder (and removes with overwrite=True)
_LAYOUT_ENTRIES = ("CUB_200_2011", "text", "train", "test", "captions.pickle", "attributes.json")


def write_birds_layout(
    out_dir: Union[str, os.PathLike],
    num_images: int,
    *,
    size: int = 256,
    test_fraction: float = 0.2,
    seed: int = 0,
    quality: int = 95,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write synthetic birds in the original birds layout (docs/original_attngan.md §8.1) under ``out_dir``.

    Images are rendered at ``int(size * 76 / 64)`` px (what the pipeline resizes to for ``size`` px
    crops) as JPEG, with a bounding box covering the whole image (so the bbox crop keeps it whole).
    Also written: ``text/``, ``{train,test}/filenames.pickle`` and ``class_info.pickle``,
    ``captions.pickle`` (the synthetic vocabulary) and ``attributes.json`` (ground truth per key).
    A folder that holds any of these already is refused (FileExistsError) unless ``overwrite``,
    which first removes them if the folder holds a synthetic set (its ``attributes.json``).
    Returns ``{"train": n_train, "test": n_test}``.
    """
    for name, value in (("num_images", num_images), ("size", size)):
        if value < 1:
            raise ValueError(f"{name}: expected >= 1, got {value}")
    out = Path(out_dir)
    present = [name for name in _LAYOUT_ENTRIES if (out / name).exists()]
    if present and not overwrite:
        raise FileExistsError(f"{out}: holds a data set already ({', '.join(present)}); choose another folder or "
                              "replace the synthetic set with overwrite=True (make-synthetic --overwrite)")
    if present and not (out / "attributes.json").is_file():
        raise FileExistsError(f"{out}: not a synthetic birds folder (no attributes.json); refusing to clear it")
    for name in present:
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink()
    splits = {s: SyntheticBirds(s, num_images=num_images, test_fraction=test_fraction, data_seed=seed,
                                base_size=size, branch_num=1, seed=0, cache=False) for s in ("train", "test")}
    image_lines, bbox_lines, attributes = [], [], {}
    number = 0
    for ds in splits.values():
        for i, key in enumerate(ds.filenames):
            number += 1
            path = out / "CUB_200_2011" / "images" / f"{key}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            Image.fromarray(ds.render(i)).save(tmp, format="JPEG", quality=quality, subsampling=0)
            os.replace(tmp, path)
            text_path = out / "text" / f"{key}.txt"
            text_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(text_path, "\n".join(ds.text[i]) + "\n")
            r = ds.render_size
            image_lines.append(f"{number} {key}.jpg")
            bbox_lines.append(f"{number} 0.0 0.0 {float(r)} {float(r)}")
            attributes[key] = {**ds.attributes(i).names(), "class_id": ds.attributes(i).class_id}
    for split, ds in splits.items():
        atomic_pickle_dump(ds.filenames, out / split / "filenames.pickle")
        atomic_pickle_dump([int(c) for c in ds.class_ids], out / split / "class_info.pickle")
    atomic_write_text(out / "CUB_200_2011" / "images.txt", "\n".join(image_lines) + "\n")
    atomic_write_text(out / "CUB_200_2011" / "bounding_boxes.txt", "\n".join(bbox_lines) + "\n")
    flat = {s: [c for caps in ds.captions for c in caps] for s, ds in splits.items()}
    save_captions_pickle(out / "captions.pickle", CaptionsPickle(flat["train"], flat["test"], splits["train"].vocab))
    atomic_write_json(out / "attributes.json", attributes)
    return {s: len(ds) for s, ds in splits.items()}


def read_attributes(data_dir: Union[str, os.PathLike]) -> dict[str, dict[str, Any]]:
    """Ground truth written by :func:`write_birds_layout`: ``{key: {"wing": "blue", ..., "class_id": 42}}``."""
    path = Path(data_dir) / "attributes.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read the synthetic attributes ({e})") from None


# ---- CLI ---------------------------------------------------------------------------------------
