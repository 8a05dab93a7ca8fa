"""GAN training snapshots: one self-contained file per snapshot, written atomically.

A snapshot (``checkpoint_epoch_{label}.pt``) is a plain dict of tensors, numbers, strings, lists
and dicts, so it loads with ``torch.load(..., weights_only=True)``:

=================  ==========================================================================
key                content
=================  ==========================================================================
``format``         ``"attngan_fast.gan_snapshot"``; ``version``: 1
``epoch``          the epoch in progress: epochs completed when ``batch`` is 0
``batch``          batches of that epoch done (0 at an epoch's end); resuming skips them
``step``           optimizer steps completed
``interrupted``    True when SIGINT / SIGTERM stopped the run here
``skipped``        optimizer steps skipped for non-finite values so far (``on_nan="skip"``)
``label``          the ``{label}`` of the file name (the original's ``netG_epoch_{label}``)
``netG``           G state_dict (current weights)
``netG_ema``       G state_dict with the EMA of the parameters and G's current BN buffers
``netsD``          list of D state_dicts
``optimizerG``     Adam state_dict; ``optimizersD``: list of them
``scaler``         GradScaler state_dict (fp16) or None
``rng``            list (one per rank) of RNG states: torch, cuda, numpy, python, noise generator
``config``         :meth:`Config.to_dict`; ``options``: the trainer options as a dict
``text_encoder``   the frozen text encoder's state_dict; ``ixtoword``: list of words (id order)
``fixed_batch``    captions and lengths of the sample grids
=================  ==========================================================================

A process killed at any moment leaves every complete snapshot loadable: files are written to a
hidden temporary name and renamed (:mod:`attngan_fast.io`); :func:`find_latest` ignores leftovers.
``batch``, ``interrupted`` and ``skipped`` were added within version 1 (read with defaults 0,
False, 0 when missing).
"""
from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import torch

from .io import FileFormatError, atomic_torch_save, describe, load_torch_file

__all__ = [
    "FORMAT",
    "capture_rng",
    "restore_rng",
    "snapshot_path",
    "find_latest",
    "save_snapshot",
    "load_snapshot",
    "export_original_netG",
    "seed_everything",
    "stream_seed",
]

FORMAT = "attngan_fast.gan_snapshot"
VERSION = 1
SNAPSHOT_EXPECTED = "an attngan_fast training snapshot (checkpoint_epoch_*.pt)"
PathLike = Union[str, os.PathLike]
_SNAPSHOT_RE = re.compile(r"^checkpoint_epoch_(\d+)\.pt$")


def capture_rng(noise_generator: Optional[torch.Generator] = None) -> dict[str, Any]:
    """Every RNG state a training step can touch, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        "noise": noise_generator.get_state() if noise_generator is not None else None,
    }
    return state


def restore_rng(state: Mapping[str, Any], noise_generator: Optional[torch.Generator] = None) -> None:
    """Inverse of :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
    if noise_generator is not None and state["noise"] is not None:
        noise_generator.set_state(state["noise"])


def snapshot_path(out_dir: PathLike, label: int) -> Path:
    """``out_dir/checkpoint_epoch_{label}.pt``."""
    return Path(out_dir) / f"checkpoint_epoch_{label}.pt"


def find_latest(out_dir: PathLike) -> Optional[Path]:
    """The snapshot with the highest label in ``out_dir`` (temporary leftovers ignored), or None."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _SNAPSHOT_RE.match(p.name))]
    return max(found)[1] if found else None


def save_snapshot(path: PathLike, snapshot: Mapping[str, Any]) -> None:
    """Write ``snapshot`` (see the module docstring) atomically to ``path``."""
    atomic_torch_save({"format": FORMAT, "version": VERSION, **snapshot}, path)


def load_snapshot(path: PathLike, map_location: Union[str, torch.device] = "cpu") -> dict[str, Any]:
    """Read a snapshot with ``weights_only=True``; ValueError (FileNotFoundError) naming the file
    and what it holds if it is not one."""
    data = load_torch_file(path, SNAPSHOT_EXPECTED, map_location=map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise FileFormatError(
            f"{path}: expected {SNAPSHOT_EXPECTED}, found {describe(data)} (a plain state_dict such as "
            "netG_epoch_*.pth loads with Generator.from_checkpoint(netG=..., text_encoder=..., captions=..., cfg=...))"
        )
    if data["version"] > VERSION:
        raise ValueError(f"{path}: snapshot version {data['version']} is newer than this attngan_fast ({VERSION})")
    return data


def export_original_netG(path: PathLike, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Save a state_dict as the original did (``netG_epoch_{e}.pth``, also ``netD{i}.pth``: the
    dict only, on the CPU), atomically."""
    atomic_torch_save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()}, path)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def stream_seed(seed: int, stream: str) -> int:
    """The 63-bit seed of the random stream named ``stream`` of a run seeded with ``seed`` (blake2b
    of both). A generator seeded with ``seed`` itself would replay the draws of the global RNGs,
    which :func:`seed_everything` seeds with it."""
    digest = hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
