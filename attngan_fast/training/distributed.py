"""torch.distributed plumbing for the GAN trainer (``torchrun`` environment variables).

Launch: ``torchrun --nproc_per_node N -m attngan_fast.cli train ...`` (one process per GPU, NCCL),
or on CPUs with the gloo backend. Each process loads its shard of the data set through a
:class:`~torch.utils.data.DistributedSampler`; rank 0 logs and writes files.
"""
from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

from ..models.blocks import Block3x3Relu, ResBlock, UpBlock

FUSED_BLOCK_TYPES = (UpBlock, Block3x3Relu, ResBlock)

__all__ = ["DistInfo", "init_distributed", "convert_sync_batchnorm", "all_mean", "any_rank", "max_over_ranks",
           "gather_objects"]


@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world_size``, ``local_rank`` on its node, its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: Optional[str] = None, backend: Optional[str] = None) -> DistInfo:
    """Join the process group described by torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``.

    device: "cpu", "cuda" or None (CUDA when available). With CUDA each process takes GPU
    ``LOCAL_RANK``. backend: default "nccl" on CUDA, else "gloo". Without ``WORLD_SIZE`` > 1 no
    group is created and a single-process :class:`DistInfo` is returned.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but torch.cuda.is_available() is False")
        torch.cuda.set_device(local_rank if world_size > 1 else torch.cuda.current_device())
        dev = torch.device("cuda", torch.cuda.current_device())
    elif device == "cpu":
        dev = torch.device("cpu")
    else:
        raise ValueError(f"device: expected 'cpu' or 'cuda', got {device!r}")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return DistInfo(rank, world_size, local_rank, dev)


def convert_sync_batchnorm(module: nn.Module, info: DistInfo) -> nn.Module:
    """Replace every BatchNorm by ``nn.SyncBatchNorm`` (statistics over all ranks' shards).

    The fused generator blocks normalise with their own shard's statistics, so the blocks that hold
    a converted BatchNorm run the reference path; a RuntimeWarning names them and how many.
    torch's SyncBatchNorm has CUDA kernels only: on the CPU this raises a ValueError.
    """
    if info.device.type != "cuda":
        raise ValueError("sync_bn: torch's SyncBatchNorm runs on CUDA devices only (it has no CPU kernel)")
    fused = Counter(type(m).__name__ for m in module.modules() if isinstance(m, FUSED_BLOCK_TYPES))
    if fused:
        warnings.warn(
            f"sync_bn: {sum(fused.values())} fused blocks of {type(module).__name__} ("
            + ", ".join(f"{n} {name}" for name, n in sorted(fused.items()))
            + ") run the reference path: their kernels reduce BatchNorm statistics over their own shard only, "
            "SyncBatchNorm reduces them across processes", RuntimeWarning, stacklevel=2)
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def all_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``values`` over the ranks (a copy; the input itself when not distributed)."""
    if not info.distributed:
        return values
    out = values.clone()
    dist.all_reduce(out)
    return out / info.world_size


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is True on any rank (so that all ranks stop together)."""
    return bool(max_over_ranks([float(flag)], info)[0])


def max_over_ranks(values: list[float], info: DistInfo) -> list[float]:
    """The element-wise maximum of ``values`` over the ranks (``values`` when not distributed)."""
    if not info.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` when not distributed)."""
    if not info.distributed:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out
