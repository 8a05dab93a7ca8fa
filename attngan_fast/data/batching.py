"""Batches: collation with the original ``prepare_data`` sorting, and a seeded ``DataLoader``."""
from __future__ import annotations

from typing import Any, NamedTuple, Optional, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .base import Sample

__all__ = ["Batch", "collate", "data_loader"]


class Batch(NamedTuple):
    """A batch sorted by caption length, longest first (for the packed LSTM), as ``prepare_data``.

    imgs: one (B, 3, s_i, s_i) per stage; captions: (B, WORDS_NUM) int64; cap_lens: (B,) int64;
    class_ids: (B,) int64; keys: B strings; wrong_imgs: one (B, 3, s_i, s_i) per stage, or None.
    """

    imgs: list[Tensor]
    captions: Tensor
    cap_lens: Tensor
    class_ids: Tensor
    keys: list[str]
    wrong_imgs: Optional[list[Tensor]] = None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        """The tensors moved to ``device`` (keys unchanged)."""
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch([move(x) for x in self.imgs], move(self.captions), move(self.cap_lens), move(self.class_ids),
                     self.keys, None if self.wrong_imgs is None else [move(x) for x in self.wrong_imgs])


def collate(samples: Sequence[Sample]) -> Batch:
    """Stack :class:`~attngan_fast.data.Sample` items and sort them by ``cap_len`` descending.

    Ties keep their order in ``samples`` (stable sort).
    """
    if not samples:
        raise ValueError("collate: empty batch")
    cap_lens = torch.tensor([s.cap_len for s in samples], dtype=torch.int64)
    order = torch.sort(cap_lens, descending=True, stable=True).indices
    picked = [samples[i] for i in order.tolist()]
    stages = len(picked[0].imgs)
    imgs = [torch.stack([s.imgs[i] for s in picked]) for i in range(stages)]
    wrong = None
    if picked[0].wrong_imgs is not None:
        wrong = [torch.stack([s.wrong_imgs[i] for s in picked]) for i in range(stages)]
    return Batch(
        imgs,
        torch.stack([s.caption for s in picked]),
        cap_lens[order],
        torch.tensor([s.class_id for s in picked], dtype=torch.int64),
        [s.key for s in picked],
        wrong,
    )


def data_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
    **kwargs: Any,
) -> DataLoader:
    """A ``DataLoader`` of :class:`Batch` whose order depends only on ``(seed, epoch)``.

    Calls ``dataset.set_epoch(epoch)`` when the dataset has it, so a loader made for epoch ``e``
    yields the same batches in every run (resuming at an epoch boundary repeats nothing and skips
    nothing). ``drop_last=True`` as the original (the DAMSM losses need a fixed batch size).
    """
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch)) % (2**63))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers,
                      collate_fn=collate, generator=generator, persistent_workers=False, **kwargs)
