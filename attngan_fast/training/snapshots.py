"""Saving and resuming a :class:`~attngan_fast.training.trainer.GANTrainer` (the snapshot format: :mod:`.checkpoint`)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import torch

from ..io import atomic_write_text
from .checkpoint import (capture_rng, export_original_netG, load_snapshot, restore_rng, save_snapshot,
                         seed_everything, snapshot_path)
from .distributed import gather_objects

__all__ = ["save_trainer", "resume_trainer", "check_same_model", "truncate_log"]


def save_trainer(trainer: Any, label: int) -> Path:
    """Write ``checkpoint_epoch_{label}.pt`` and ``netG_epoch_{label}.pth`` (EMA G, original
    format). Collective: every process calls it (the RNG states of all ranks are stored)."""
    rng = gather_objects(capture_rng(trainer.noise_gen), trainer.dist)
    path = snapshot_path(trainer.out_dir, label)
    if not trainer.dist.is_main:
        return path
    ema = trainer.ema_state_dict()
    save_snapshot(path, {
        "epoch": trainer.epoch,
        "step": trainer.step,
        "label": label,
        "netG": trainer.netG.state_dict(),
        "netG_ema": ema,
        "netsD": [d.state_dict() for d in trainer.netsD],
        "optimizerG": trainer.optimizerG.state_dict(),
        "optimizersD": [o.state_dict() for o in trainer.optimizersD],
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "rng": rng,
        "config": trainer.cfg.to_dict(),
        "options": asdict(trainer.options),
        "text_encoder": trainer.text_encoder.state_dict(),
        "ixtoword": trainer.ixtoword,
        "fixed_batch": trainer.fixed_batch,
    })
    export_original_netG(trainer.out_dir / f"netG_epoch_{label}.pth", ema)
    return path


def resume_trainer(trainer: Any, path: str | Path) -> None:
    """Continue from a snapshot: weights, EMA, optimizers, scaler, epoch, step and RNG states.

    Resuming at an epoch boundary with the same options and number of processes reproduces
    the uninterrupted run exactly. ``log.jsonl`` is cut back to the snapshot's step.
    """
    snap = load_snapshot(path, map_location=trainer.device)
    check_same_model(snap["config"], trainer.cfg.to_dict(), path)
    trainer.netG.load_state_dict(snap["netG"])
    params = dict(trainer.netG_ema.named_parameters())
    with torch.no_grad():
        for name, value in snap["netG_ema"].items():
            if name in params:
                params[name].copy_(value)
    for netD, state in zip(trainer.netsD, snap["netsD"], strict=True):
        netD.load_state_dict(state)
    trainer.optimizerG.load_state_dict(snap["optimizerG"])
    for optimizer, state in zip(trainer.optimizersD, snap["optimizersD"], strict=True):
        optimizer.load_state_dict(state)
    if snap["scaler"] is not None:
        trainer.scaler.load_state_dict(snap["scaler"])
    trainer.epoch, trainer.step = snap["epoch"], snap["step"]
    trainer.fixed_batch = snap["fixed_batch"]
    rng = snap["rng"]
    if len(rng) == trainer.dist.world_size:
        restore_rng(rng[trainer.dist.rank], trainer.noise_gen)
    else:  # another number of processes: the noise stream continues, the rest is reseeded
        trainer.noise_gen.set_state(rng[0]["noise"])
        seed_everything(trainer.options.seed + 7919 * trainer.step + trainer.dist.rank)
    if trainer.dist.is_main:
        truncate_log(trainer.out_dir / "log.jsonl", trainer.step)


def check_same_model(saved: Mapping[str, Any], current: Mapping[str, Any], path: Any) -> None:
    """ValueError naming the keys where the snapshot's model (saved config) differs from ``current``."""
    keys = [("GAN", k) for k in ("DF_DIM", "GF_DIM", "Z_DIM", "CONDITION_DIM", "R_NUM", "B_DCGAN")]
    keys += [("TEXT", "EMBEDDING_DIM"), ("TREE", "BRANCH_NUM")]
    differ = [f"{a}.{b}: {saved[a][b]!r} in the snapshot, {current[a][b]!r} now"
              for a, b in keys if saved[a][b] != current[a][b]]
    if differ:
        raise ValueError(f"{path}: the snapshot's model differs from the configuration: " + "; ".join(differ))


def truncate_log(path: Path, step: int) -> None:
    """Keep the records of ``log.jsonl`` up to ``step`` (and drop a line torn by a killed process)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a killed process
            continue
        if record["step"] <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))
