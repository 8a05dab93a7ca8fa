"""DAMSM pre-training, as the original ``pretrain_DAMSM.py`` (docs/original_attngan.md §7.2).

Per epoch: a new ``Adam(lr, betas=(0.5, 0.999))`` over the text encoder and the trainable image
encoder parameters; both encoders in train mode (the frozen Inception's BatchNorm uses batch
statistics and updates its running stats, as in the original); per batch
``loss = w_loss0 + w_loss1 + s_loss0 + s_loss1`` (``attngan_fast.losses``), gradient norm of the
text encoder clipped at ``TRAIN.RNN_GRAD_CLIP``; then validation on at most 51 test batches, and
``lr *= 0.98`` while ``lr > ENCODER_LR / 10``.

Outputs under ``out_dir``: ``Model/text_encoder{e}.pth`` and ``Model/image_encoder{e}.pth``
(state_dicts, the original's names) after epoch ``e`` when ``e % SNAPSHOT_INTERVAL == 0`` and after
the last epoch; ``Model/damsm_state.pth``, everything needed to resume, after every epoch;
``run.json``, the config, the per-epoch losses and timings and, at the end, the R-precision of the
test split's true images (:func:`attngan_fast.metrics.r_precision.dataset_r_precision`). All written
atomically. Resuming (``resume=True``) continues at the next epoch exactly as an uninterrupted
run would (data order, augmentation and dropout depend only on the seed and the epoch).

Departures: the validation losses are means over the batches seen (the original divided the sums
by the last step index); the final snapshot is also written after the last epoch; the attention
images of the original are not drawn.
"""
from __future__ import annotations

import math
import os
import random
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Union

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .. import losses
from ..config import Config, from_dict
from ..data import build_dataset, data_loader
from ..io import atomic_torch_save, atomic_write_json, load_module_state, load_state_dict_file, load_torch_file
from ..metrics.r_precision import dataset_r_precision
from ..models import CNN_ENCODER, RNN_ENCODER
from ..models.small_cnn import SmallImageEncoder

__all__ = ["build_text_encoder", "build_image_encoder", "load_encoders", "image_encoder_path", "pretrain_damsm",
           "saved_config", "damsm_step"]

PathLike = Union[str, os.PathLike]
STATE_FILE = "damsm_state.pth"
# keys that may change between a run and its resumption (each change is logged)
_RESUMABLE_CHANGES = {"TRAIN.MAX_EPOCH", "TRAIN.SNAPSHOT_INTERVAL", "WORKERS", "CUDA", "GPU_ID"}
STATE_EXPECTED = f"a DAMSM pre-training state (Model/{STATE_FILE})"
_ENCODER_EXPECTED = {True: "a state_dict of RNN_ENCODER (text_encoder*.pth)",
                     False: "a state_dict of the DAMSM image encoder (image_encoder*.pth)"}


def build_text_encoder(cfg: Config, n_words: int) -> RNN_ENCODER:
    """``RNN_ENCODER(n_words, nhidden=TEXT.EMBEDDING_DIM)``, freshly initialised."""
    return RNN_ENCODER(n_words, cfg, nhidden=cfg.TEXT.EMBEDDING_DIM)


def build_image_encoder(cfg: Config) -> nn.Module:
    """The image encoder ``DAMSM.IMAGE_ENCODER`` names, with ``nef = TEXT.EMBEDDING_DIM``.

    "inception_v3": :class:`CNN_ENCODER` with the backbone from ``DAMSM.INCEPTION_WEIGHTS``;
    "small_cnn": :class:`SmallImageEncoder` (``DAMSM.SMALL_CNN_WIDTH``, ``DAMSM.SMALL_CNN_INPUT``).
    """
    if cfg.DAMSM.IMAGE_ENCODER == "small_cnn":
        return SmallImageEncoder(cfg.TEXT.EMBEDDING_DIM, cfg.DAMSM.SMALL_CNN_WIDTH, cfg.DAMSM.SMALL_CNN_INPUT)
    return CNN_ENCODER(cfg.TEXT.EMBEDDING_DIM, weights=cfg.DAMSM.INCEPTION_WEIGHTS or None)


def image_encoder_path(text_encoder_path: PathLike) -> Path:
    """The image encoder file next to a text encoder file (the original's naming rule)."""
    path = Path(text_encoder_path)
    if "text_encoder" not in path.name:
        raise ValueError(f"{path}: expected a file name containing 'text_encoder' (e.g. text_encoder200.pth)")
    return path.with_name(path.name.replace("text_encoder", "image_encoder"))


def load_encoders(
    cfg: Config, n_words: int, text_encoder_path: PathLike, device: Union[str, torch.device] = "cpu",
    frozen: bool = True,
) -> tuple[RNN_ENCODER, nn.Module]:
    """Pre-trained DAMSM encoders: ``text_encoder_path`` and its ``image_encoder`` twin.

    frozen=True: eval mode, ``requires_grad=False`` (how the GAN training uses them). Files are read
    with ``weights_only=True``; a vocabulary size mismatch raises ``ValueError`` saying so.
    """
    text_encoder = build_text_encoder(cfg, n_words)
    image_encoder = _quiet_image_encoder(cfg)
    files = ((text_encoder, Path(text_encoder_path)), (image_encoder, image_encoder_path(text_encoder_path)))
    for module, path in files:
        expected = _ENCODER_EXPECTED[module is text_encoder]
        state = load_state_dict_file(path, expected)
        weight = state.get("encoder.weight")
        if module is text_encoder and weight is not None and weight.shape[0] != n_words:
            raise ValueError(f"{path}: the text encoder has a vocabulary of {weight.shape[0]} words, the data has "
                             f"{n_words} (a different captions.pickle?)")
        load_module_state(module, state, path, expected)
    for module in (text_encoder, image_encoder):
        module.to(device)
        if frozen:
            module.eval().requires_grad_(False)
    return text_encoder, image_encoder


def _quiet_image_encoder(cfg: Config) -> nn.Module:
    """The image encoder about to receive a whole checkpoint (no warning about random weights)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="CNN_ENCODER: weights=None")
        return build_image_encoder(cfg)


def damsm_step(
    text_encoder: nn.Module, image_encoder: nn.Module, batch: Any, cfg: Config
) -> dict[str, torch.Tensor]:
    """The four DAMSM losses of a :class:`~attngan_fast.data.Batch` (on the encoders' device).

    Returns ``{"w_loss0", "w_loss1", "s_loss0", "s_loss1"}`` scalars (with autograd graphs).
    """
    batch_size = batch.captions.size(0)
    labels = torch.arange(batch_size, device=batch.captions.device)
    words_features, sent_code = image_encoder(batch.imgs[-1])
    words_emb, sent_emb = text_encoder(batch.captions, batch.cap_lens)
    # the fused words/sent losses when the backend is "fast", the reference ones otherwise
    w_loss0, w_loss1, s_loss0, s_loss1 = losses.damsm_loss_terms(
        words_features, sent_code, words_emb, sent_emb, labels, batch.cap_lens, batch.class_ids, cfg
    )
    return {"w_loss0": w_loss0, "w_loss1": w_loss1, "s_loss0": s_loss0, "s_loss1": s_loss1}


def pretrain_damsm(
    cfg: Optional[Config],
    out_dir: PathLike,
    *,
    resume: bool = False,
    seed: Optional[int] = None,
    device: Optional[Union[str, torch.device]] = None,
    progress: bool = True,
    log: Callable[[str], None] = tqdm.write,
) -> dict[str, Any]:
    """Pre-train the DAMSM encoders on ``cfg``'s data; returns the run summary (also ``run.json``).

    resume: continue the run in ``out_dir`` with its saved config; ``cfg`` (None: the saved one
        as it is) may differ from it only in the keys that do not change the run's model, data or
        optimisation (TRAIN.MAX_EPOCH, TRAIN.SNAPSHOT_INTERVAL, WORKERS, CUDA, GPU_ID; each change
        is logged), else ValueError naming the keys.
    seed: of initialisation, data order, augmentation and dropout; None draws one in [1, 10000] as
        the original (a resumed run keeps its own). device: default CUDA when available and
        ``cfg.CUDA``, else the CPU.
    """
    out = Path(out_dir)
    model_dir = out / "Model"
    state_path = model_dir / STATE_FILE
    state = None
    if resume:
        state = load_torch_file(state_path, STATE_EXPECTED)
        cfg = _resumed_config(from_dict(state["config"]), cfg, log)
        seed = int(state["seed"])
    elif cfg is None:
        raise ValueError("cfg: required unless resume=True (then the saved config is used)")
    elif seed is None:
        seed = random.randint(1, 10000)
    device = torch.device(device or ("cuda" if cfg.CUDA and torch.cuda.is_available() else "cpu"))
    torch.manual_seed(seed)

    train_set = build_dataset(cfg, "train", seed=seed)
    test_set = build_dataset(cfg, "test", seed=seed + 1)
    if len(train_set) < cfg.TRAIN.BATCH_SIZE:
        raise ValueError(f"the train split has {len(train_set)} images, fewer than TRAIN.BATCH_SIZE="
                         f"{cfg.TRAIN.BATCH_SIZE} (batches are full-size, drop_last=True)")
    if test_set.n_words != train_set.n_words:
        raise ValueError(f"train and test vocabularies differ ({train_set.n_words} vs {test_set.n_words} words)")
    text_encoder = build_text_encoder(cfg, train_set.n_words).to(device)
    image_encoder = build_image_encoder(cfg).to(device)

    start_epoch, lr, history, elapsed = 0, cfg.TRAIN.ENCODER_LR, [], 0.0
    if state is not None:
        text_encoder.load_state_dict(state["text_encoder"])
        image_encoder.load_state_dict(state["image_encoder"])
        start_epoch, lr, history = int(state["epoch"]), float(state["lr"]), list(state["history"])
        elapsed = float(state["elapsed_s"])
        torch.set_rng_state(state["torch_rng"])
        log(f"resuming {out} at epoch {start_epoch} (lr {lr:.3g})")
    elif cfg.TRAIN.NET_E:
        for module, path in ((text_encoder, Path(cfg.TRAIN.NET_E)), (image_encoder, image_encoder_path(cfg.TRAIN.NET_E))):
            expected = _ENCODER_EXPECTED[module is text_encoder]
            load_module_state(module, load_state_dict_file(path, expected), path, expected)
        found = re.search(r"(\d+)\D*$", Path(cfg.TRAIN.NET_E).stem)
        start_epoch = int(found.group(1)) + 1 if found else 0
        log(f"loaded {cfg.TRAIN.NET_E} and its image encoder; starting at epoch {start_epoch}")

    params = list(text_encoder.parameters()) + [p for p in image_encoder.parameters() if p.requires_grad]
    threads = f" ({torch.get_num_threads()} CPU threads)" if device.type == "cpu" else ""
    log(f"DAMSM pre-training: {len(train_set)} train / {len(test_set)} test images, {train_set.n_words} words, "
        f"{type(image_encoder).__name__}, {device}{threads}, seed {seed}, output {out}")
    summary: dict[str, Any] = {"config": cfg.to_dict(), "seed": seed, "device": str(device),
                               "threads": torch.get_num_threads(), "torch": torch.__version__,
                               "train_images": len(train_set), "test_images": len(test_set),
                               "n_words": train_set.n_words, "epochs": history}
    for epoch in range(start_epoch, cfg.TRAIN.MAX_EPOCH):
        epoch_start = time.perf_counter()
        optimizer = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
        train_losses, images_per_s = _train_epoch(text_encoder, image_encoder, optimizer, params, train_set, cfg,
                                                  seed, epoch, device, progress)
        val_losses = _validate(text_encoder, image_encoder, test_set, cfg, seed, epoch, device)
        seconds = time.perf_counter() - epoch_start
        elapsed += seconds
        history.append({"epoch": epoch, "lr": lr, **train_losses, **{f"val_{k}": v for k, v in val_losses.items()},
                        "images_per_s": images_per_s, "seconds": seconds})
        log(f"epoch {epoch}: lr {lr:.3g} | train w {train_losses['w_loss']:.3f} s {train_losses['s_loss']:.3f}"
            + (f" | val w {val_losses['w_loss']:.3f} s {val_losses['s_loss']:.3f}" if val_losses else "")
            + f" | {images_per_s:.0f} img/s, {seconds:.1f} s")
        if lr > cfg.TRAIN.ENCODER_LR / 10.0:
            lr *= 0.98
        if epoch % cfg.TRAIN.SNAPSHOT_INTERVAL == 0 or epoch == cfg.TRAIN.MAX_EPOCH - 1:
            atomic_torch_save(text_encoder.state_dict(), model_dir / f"text_encoder{epoch}.pth")
            atomic_torch_save(image_encoder.state_dict(), model_dir / f"image_encoder{epoch}.pth")
        atomic_torch_save({"epoch": epoch + 1, "lr": lr, "seed": seed, "config": cfg.to_dict(),
                           "text_encoder": text_encoder.state_dict(), "image_encoder": image_encoder.state_dict(),
                           "torch_rng": torch.get_rng_state(), "history": history, "elapsed_s": elapsed}, state_path)
        atomic_write_json(out / "run.json", {**summary, "train_seconds": elapsed})

    summary["train_seconds"] = elapsed
    if len(test_set) >= 10:
        eval_set = build_dataset(cfg, "test", seed=seed + 1, augment=False)
        result = dataset_r_precision(text_encoder, image_encoder, eval_set, seed=seed)
        summary["r_precision"] = result.to_dict()
        log(f"R-precision on {len(eval_set)} held-out test images (true images, 1 true + 99 mismatched "
            f"captions, 10 folds): {result}")
    else:
        log(f"R-precision skipped: the test split has {len(test_set)} images (10 needed)")
    atomic_write_json(out / "run.json", summary)
    return summary


def _train_epoch(
    text_encoder: nn.Module, image_encoder: nn.Module, optimizer: torch.optim.Optimizer, params: list,
    dataset: Any, cfg: Config, seed: int, epoch: int, device: torch.device, progress: bool,
) -> tuple[dict[str, float], float]:
    text_encoder.train()
    image_encoder.train()
    loader = data_loader(dataset, cfg.TRAIN.BATCH_SIZE, shuffle=True, num_workers=cfg.WORKERS, seed=seed,
                         epoch=epoch, pin_memory=device.type == "cuda")
    totals = {"w_loss0": 0.0, "w_loss1": 0.0, "s_loss0": 0.0, "s_loss1": 0.0}
    steps, images, start = 0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=not progress, dynamic_ncols=True)
    for batch in bar:
        batch = batch.to(device, non_blocking=True)
        parts = damsm_step(text_encoder, image_encoder, batch, cfg)
        loss = parts["w_loss0"] + parts["w_loss1"] + parts["s_loss0"] + parts["s_loss1"]
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), cfg.TRAIN.RNN_GRAD_CLIP)
        optimizer.step()
        for k, v in parts.items():
            totals[k] += v.item()
        steps += 1
        images += batch.captions.size(0)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"epoch {epoch} step {steps}: the DAMSM loss is {loss.item()}")
        bar.set_postfix(w=f"{(totals['w_loss0'] + totals['w_loss1']) / steps:.3f}",
                        s=f"{(totals['s_loss0'] + totals['s_loss1']) / steps:.3f}",
                        img_s=f"{images / (time.perf_counter() - start):.0f}", refresh=False)
    means = {k: v / max(steps, 1) for k, v in totals.items()}
    means["w_loss"] = means["w_loss0"] + means["w_loss1"]
    means["s_loss"] = means["s_loss0"] + means["s_loss1"]
    return means, images / max(time.perf_counter() - start, 1e-9)


@torch.no_grad()
def _validate(
    text_encoder: nn.Module, image_encoder: nn.Module, dataset: Any, cfg: Config, seed: int, epoch: int,
    device: torch.device, max_batches: int = 51,
) -> dict[str, float]:
    """Mean w_loss (w0 + w1) and s_loss (s0 + s1) over at most 51 test batches; {} if there is none."""
    text_encoder.eval()
    image_encoder.eval()
    loader = data_loader(dataset, cfg.TRAIN.BATCH_SIZE, shuffle=True, num_workers=cfg.WORKERS, seed=seed + 1,
                         epoch=epoch)
    w_total = s_total = 0.0
    steps = 0
    for batch in loader:
        parts = damsm_step(text_encoder, image_encoder, batch.to(device), cfg)
        w_total += float(parts["w_loss0"] + parts["w_loss1"])
        s_total += float(parts["s_loss0"] + parts["s_loss1"])
        steps += 1
        if steps == max_batches:
            break
    return {"w_loss": w_total / steps, "s_loss": s_total / steps} if steps else {}


def saved_config(out_dir: PathLike) -> Config:
    """The config of the DAMSM run in ``out_dir`` (from ``Model/damsm_state.pth``)."""
    state = load_torch_file(Path(out_dir) / "Model" / STATE_FILE, STATE_EXPECTED, mmap=True)
    return from_dict(state["config"])


def _resumed_config(saved: Config, given: Optional[Config], log: Callable[[str], None]) -> Config:
    """``given`` (None: ``saved``) if it differs from ``saved`` only in resumable keys (logged)."""
    if given is None:
        return saved

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
        return out

    old, new = flat(saved.to_dict()), flat(given.to_dict())
    changed = [k for k in new if old.get(k) != new[k]]
    refused = [f"{k} (saved {old.get(k)!r}, given {new[k]!r})" for k in changed if k not in _RESUMABLE_CHANGES]
    if refused:
        raise ValueError(f"resume: the config differs from the run's saved config in {'; '.join(refused)}; only "
                         f"{', '.join(sorted(_RESUMABLE_CHANGES))} may change when resuming (give no config, or "
                         "only those, to continue the run as saved)")
    for k in changed:
        log(f"resuming with {k} changed: {old.get(k)!r} -> {new[k]!r}")
    return given
