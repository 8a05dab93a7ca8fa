"""What every caption dataset shares: sampling of captions, images and wrong images.

A dataset holds, per image ``k``: its key ``filenames[k]``, its captions ``captions[k]`` (lists of
word ids), its class id ``class_ids[k]``; subclasses supply the image (:meth:`load_image`).

Randomness (caption choice, WORDS_NUM truncation, crop, flip, wrong image) comes from a generator
derived from ``(seed, epoch, index)``: a sample is the same whatever the worker process or the order
of access, different epochs differ (call :meth:`set_epoch` before each epoch, as with
``DistributedSampler``), and ``seed=None`` draws a fresh seed from the OS once per dataset.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .text import Vocabulary, pad_caption
from .transforms import ImageTransform

__all__ = ["Sample", "CaptionDataset"]


class Sample(NamedTuple):
    """One item: images per stage, one caption, its class and key (the original's item order).

    imgs: list of (3, s_i, s_i) float32 in [-1, 1], s_i = base_size * 2**i;
    caption: (WORDS_NUM,) int64, zero padded; cap_len: number of words kept (>= 1);
    wrong_imgs: images of a random image of another class (``wrong_images=True``), else None.
    """

    imgs: list[Tensor]
    caption: Tensor
    cap_len: int
    class_id: int
    key: str
    wrong_imgs: Optional[list[Tensor]] = None


class CaptionDataset(Dataset):
    """Base class of :class:`~attngan_fast.data.TextDataset` and ``SyntheticBirds``.

    Subclasses set ``filenames``, ``captions``, ``class_ids`` and ``vocab`` and implement
    :meth:`load_image`, then call :meth:`_check`.
    """

    filenames: list[str]
    captions: list[list[list[int]]]
    class_ids: np.ndarray
    vocab: Vocabulary

    def __init__(
        self,
        *,
        split: str,
        base_size: int,
        branch_num: int,
        words_num: int,
        seed: Optional[int] = None,
        augment: bool = True,
        wrong_images: bool = False,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        if words_num < 1:
            raise ValueError(f"words_num: expected >= 1, got {words_num}")
        self.split = split
        self.words_num = words_num
        self.transform = ImageTransform(base_size, branch_num, augment)
        self.imsize = self.transform.imsize
        self.seed = int(np.random.SeedSequence().entropy % (2**63)) if seed is None else int(seed)
        self.epoch = 0
        self.wrong_images = wrong_images

    # ---- what subclasses provide -------------------------------------------------------------
    def load_image(self, index: int) -> Image.Image:
        """The RGB image of ``filenames[index]`` before resizing (birds: already bbox-cropped)."""
        raise NotImplementedError

    def _check(self) -> None:
        n = len(self.filenames)
        if len(self.captions) != n or len(self.class_ids) != n:
            raise ValueError(
                f"{type(self).__name__}: {n} filenames but {len(self.captions)} caption lists and "
                f"{len(self.class_ids)} class ids"
            )
        for key, caps in zip(self.filenames, self.captions):
            if not caps:
                raise ValueError(f"{type(self).__name__}: image {key!r} has no caption")
        self.class_ids = np.asarray(self.class_ids, dtype=np.int64)

    # ---- the shared behaviour ----------------------------------------------------------------
    @property
    def n_words(self) -> int:
        """Vocabulary size (the text encoder's ``ntoken``)."""
        return self.vocab.n_words

    @property
    def ixtoword(self) -> dict[int, str]:
        return self.vocab.ixtoword

    @property
    def wordtoix(self) -> dict[str, int]:
        return self.vocab.wordtoix

    def __len__(self) -> int:
        return len(self.filenames)

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch`` (captions, crops, flips, wrong images)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, index])

    def images(self, index: int, rng: np.random.Generator) -> list[Tensor]:
        """Transformed images of ``index`` (one per stage), random draws from ``rng``."""
        return self.transform(self.load_image(index), rng)

    def caption(self, index: int, sentence: int, rng: np.random.Generator) -> tuple[Tensor, int]:
        """Caption ``sentence`` of image ``index``: ``(WORDS_NUM,)`` int64 padded ids and its length."""
        ids, length = pad_caption(self.captions[index][sentence], self.words_num, rng)
        return torch.from_numpy(ids), length

    def wrong_index(self, index: int, rng: np.random.Generator) -> int:
        """A uniformly random image of a class other than ``index``'s."""
        others = np.flatnonzero(self.class_ids != self.class_ids[index])
        if len(others) == 0:
            raise ValueError(f"{type(self).__name__}: every image has class {self.class_ids[index]}, no wrong image")
        return int(others[rng.integers(len(others))])

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        rng = self.rng(index)
        sentence = int(rng.integers(len(self.captions[index])))
        caption, cap_len = self.caption(index, sentence, rng)
        imgs = self.images(index, rng)
        wrong = self.images(self.wrong_index(index, rng), rng) if self.wrong_images else None
        return Sample(imgs, caption, cap_len, int(self.class_ids[index]), self.filenames[index], wrong)

    def caption_pool(self, rng: np.random.Generator) -> tuple[Tensor, Tensor, np.ndarray, np.ndarray]:
        """Every caption of every image, padded/truncated like training captions.

        Returns captions (M, WORDS_NUM) int64, cap_lens (M,) int64, the image index of each
        caption (M,) and its class id (M,), with M the total number of captions.
        """
        rows, lens, owners = [], [], []
        for k, caps in enumerate(self.captions):
            for ids in caps:
                padded, length = pad_caption(ids, self.words_num, rng)
                rows.append(padded)
                lens.append(length)
                owners.append(k)
        owner = np.asarray(owners, dtype=np.int64)
        return (torch.from_numpy(np.stack(rows)), torch.tensor(lens, dtype=torch.int64), owner, self.class_ids[owner])

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(split={self.split!r}, images={len(self)}, n_words={self.n_words}, "
                f"imsize={self.imsize}, words_num={self.words_num}, seed={self.seed})")

