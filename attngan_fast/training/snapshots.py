"""Saving and resuming a :class:`~attngan_fast.training.trainer.GANTrainer` (the snapshot format:
:mod:`attngan_fast.checkpoint`), and continuing from the original's files (``TRAIN.NET_G``, ``TRAIN.B_NET_D``).

A snapshot is one unit of files: ``netG_epoch_{label}.pth`` (EMA G) and ``netD{i}.pth`` (the Ds'
current weights, overwritten by every snapshot, as the original) are written first, the checkpoint
``checkpoint_epoch_{label}.pt`` last: the checkpoint is what counts. A process killed in between
leaves the previous snapshot the latest; resuming rewrites the exports of the snapshot it resumes
(see :func:`repair_exports`).
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping

import torch

from ..checkpoint import (
    capture_rng,
    export_original_netG,
    load_snapshot,
    restore_rng,
    save_snapshot,
    seed_everything,
    snapshot_path,
)
from ..io import atomic_write_text
from .distributed import gather_objects

__all__ = ["save_trainer", "resume_trainer", "repair_exports", "continue_from_original", "grow_from_snapshot",
           "check_same_model", "truncate_log"]

_NETG_RE = re.compile(r"^netG_epoch_(\d+)\.pth$")


def save_trainer(trainer: Any, label: int, interrupted: bool = False) -> Path:
    """Write ``netG_epoch_{label}.pth`` (EMA G), ``netD{i}.pth`` (original format), then
    ``checkpoint_epoch_{label}.pt``. Collective: every process calls it (the RNG states of all
    ranks are stored). interrupted: the run stops here on a signal (recorded in the snapshot)."""
    rng = gather_objects(capture_rng(trainer.noise_gen), trainer.dist)
    path = snapshot_path(trainer.out_dir, label)
    if not trainer.dist.is_main:
        return path
    ema = trainer.ema_state_dict()
    netsD = [d.state_dict() for d in trainer.netsD]
    _write_exports(trainer.out_dir, label, ema, netsD)
    save_snapshot(path, {
        "epoch": trainer.epoch,
        "batch": trainer.batch,
        "step": trainer.step,
        "interrupted": interrupted,
        "skipped": trainer.skipped,
        "label": label,
        "netG": trainer.netG.state_dict(),
        "netG_ema": ema,
        "netsD": netsD,
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
    return path


def _write_exports(folder: Path, label: int, netG: Mapping[str, torch.Tensor],
                   netsD: list[Mapping[str, torch.Tensor]]) -> None:
    export_original_netG(folder / f"netG_epoch_{label}.pth", netG)
    for i, state in enumerate(netsD):
        export_original_netG(folder / f"netD{i}.pth", state)


def repair_exports(path: str | Path, snap: Mapping[str, Any]) -> list[str]:
    """Make the folder of snapshot ``path`` consistent with it: write ``netG_epoch_{label}.pth``
    if it is missing and ``netD{i}.pth`` from it, and delete the ``netG_epoch_{e}.pth`` of later
    epochs that have no checkpoint (written by a process killed before its checkpoint). Returns the
    names written or deleted."""
    folder = Path(path).parent
    label = snap["label"]
    netG = folder / f"netG_epoch_{label}.pth"
    changed = [] if netG.exists() else [netG.name]
    if changed:
        export_original_netG(netG, snap["netG_ema"])
    netsD = [folder / f"netD{i}.pth" for i in range(len(snap["netsD"]))]
    changed += [p.name for p in netsD if not p.exists()]
    for p, state in zip(netsD, snap["netsD"]):  # they belong to the latest snapshot written: rewrite
        export_original_netG(p, state)
    for p in folder.iterdir():
        m = _NETG_RE.match(p.name)
        if m and int(m.group(1)) > label and not snapshot_path(folder, int(m.group(1))).exists():
            p.unlink()
            changed.append(p.name)
    return changed


def resume_trainer(trainer: Any, path: str | Path) -> None:
    """Continue from a snapshot: weights, EMA, optimizers, scaler, epoch, batch, step and RNG states.

    Resuming with the same options and number of processes reproduces the uninterrupted run
    exactly, at an epoch's end or within an epoch (a mid-epoch snapshot needs the same number of
    processes and accumulation steps). ``log.jsonl`` is cut back to the snapshot's step; when the
    snapshot lies in the output folder its exports are repaired (:func:`repair_exports`).
    """
    snap = load_snapshot(path, map_location=trainer.device)
    check_same_model(snap["config"], trainer.cfg.to_dict(), path)
    batch = snap.get("batch", 0)
    shards = (len(snap["rng"]), snap["options"]["accum_steps"])
    if batch and shards != (trainer.dist.world_size, trainer.options.accum_steps):
        raise ValueError(f"{path}: a snapshot taken within an epoch (batch {batch}) resumes with the same "
                         f"processes x accumulation steps ({shards[0]} x {shards[1]}), not "
                         f"{trainer.dist.world_size} x {trainer.options.accum_steps}")
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
    trainer.epoch, trainer.batch, trainer.step = snap["epoch"], batch, snap["step"]
    trainer.skipped = snap.get("skipped", 0)
    trainer.fixed_batch = snap["fixed_batch"]
    rng = snap["rng"]
    if len(rng) == trainer.dist.world_size:
        restore_rng(rng[trainer.dist.rank], trainer.noise_gen)
    else:  # another number of processes: the noise stream continues, the rest is reseeded
        trainer.noise_gen.set_state(rng[0]["noise"])
        seed_everything(trainer.options.seed + 7919 * trainer.step + trainer.dist.rank)
    if trainer.dist.is_main:
        truncate_log(trainer.out_dir / "log.jsonl", trainer.step)
        if Path(path).resolve().parent == trainer.out_dir.resolve():
            changed = repair_exports(path, snap)
            if changed:
                print(f"{path}: repaired the snapshot's files: {', '.join(changed)}", file=sys.stderr)


def continue_from_original(trainer: Any, net_g: str | Path, load_netsD: bool) -> None:
    """The original's continuation (docs/original_attngan.md §7.1): G (and its EMA) from the G
    state_dict ``net_g``, training from the epoch in its name + 1 (``netG_epoch_50.pth`` -> 51), the
    step count from 0; with ``load_netsD`` each D from ``netD{i}.pth`` in ``net_g``'s folder. The
    optimizers start afresh, as in the original."""
    path = Path(net_g)
    m = re.search(r"_(\d+)\.[^.]*$", path.name)
    if m is None:
        raise ValueError(f"TRAIN.NET_G {path}: the start epoch is read from the file name "
                         f"(netG_epoch_<epoch>.pth), found no _<number>. in {path.name!r}")
    _load_original(trainer.netG, path, "TRAIN.NET_G")
    params = dict(trainer.netG_ema.named_parameters())
    with torch.no_grad():
        for name, value in trainer.netG.named_parameters():
            params[name].copy_(value)
    if load_netsD:
        for i, netD in enumerate(trainer.netsD):
            _load_original(netD, path.parent / f"netD{i}.pth", "TRAIN.B_NET_D")
    trainer.epoch, trainer.batch, trainer.step = int(m.group(1)) + 1, 0, 0


def grow_from_snapshot(trainer: Any, path: str | Path) -> None:
    """Start a model with more stages from a snapshot of the same model with fewer
    (``TREE.BRANCH_NUM`` smaller, all else equal): G's first stages (text conditioning, the stage
    networks and their image heads; weights and EMA) and the first Ds from it, the new stages as
    initialised; optimizers, epoch and step afresh (a progressive schedule: the cheap low
    resolution first). ValueError when the snapshot is not such a model."""
    snap = load_snapshot(path, map_location=trainer.device)
    saved, current = snap["config"], trainer.cfg.to_dict()
    stages = (saved["TREE"]["BRANCH_NUM"], current["TREE"]["BRANCH_NUM"])
    if stages[0] >= stages[1]:
        raise ValueError(f"{path}: a snapshot to grow from has fewer stages than this model, found "
                         f"TREE.BRANCH_NUM {stages[0]} in it and {stages[1]} now")
    check_same_model({**saved, "TREE": {**saved["TREE"], "BRANCH_NUM": stages[1]}}, current, path)
    missing, unexpected = trainer.netG.load_state_dict(snap["netG"], strict=False)
    new = tuple(f"{net}{i}." for i in range(stages[0] + 1, stages[1] + 1) for net in ("h_net", "img_net"))
    if unexpected or any(not k.startswith(new) for k in missing):
        raise ValueError(f"{path}: G's first stages do not match this model's (unexpected {unexpected}, "
                         f"missing {[k for k in missing if not k.startswith(new)]})")
    params = dict(trainer.netG_ema.named_parameters())
    with torch.no_grad():
        for name, value in trainer.netG.named_parameters():
            params[name].copy_(snap["netG_ema"].get(name, value))
    for netD, state in zip(trainer.netsD, snap["netsD"]):
        netD.load_state_dict(state)
    trainer.epoch, trainer.batch, trainer.step = 0, 0, 0


def _load_original(module: torch.nn.Module, path: Path, key: str) -> None:
    """Load the state_dict file ``path`` into ``module`` strictly (``module.`` prefixes of
    DataParallel saves dropped); ValueError naming ``key`` and the file otherwise."""
    what = f"{key}: {path}"
    if not path.is_file():
        raise ValueError(f"{what}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated, foreign or malicious file
        raise ValueError(f"{what}: not a readable state_dict file ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{what}: expected a state_dict of {type(module).__name__}, found a {type(state).__name__}")
    state = {re.sub(r"^module\.", "", k): v for k, v in state.items()}
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{what}: not a state_dict of this config's {type(module).__name__}: {e}") from None


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
