"""The AttnGAN training loop (original ``trainer.condGANTrainer.train``, spec §7.1).

Per step, for each micro-batch (one per process and per accumulation step; see *Sharding*):

1. sort the captions by length, longest first (:func:`attngan_fast.data.collate`);
2. encode them with the frozen text encoder (eval mode, no gradients) and build the word mask
   (``captions == 0`` over the longest caption's length);
3. run G on Gaussian noise and the CA noise;
4. for every stage i: D_i's loss (conditional, unconditional and wrong-caption terms) on the real
   image of that scale and the detached fake, backward, Adam step;
5. G's loss: adversarial terms of every stage + KL + LAMBDA * DAMSM (words + sentence) of the last
   stage's image against the frozen image encoder (eval mode); backward, Adam step;
6. EMA of G's parameters (decay 0.999; BN buffers are not averaged).

Adam(lr 2e-4, betas (0.5, 0.999)) for G and each D, as the original. The Ds' parameters are frozen
while G's loss is back-propagated (the original computed and discarded their gradients there;
G's gradients are the same).

Sharding. ``TRAIN.BATCH_SIZE`` (b) is the micro-batch: what one forward pass sees. With W
processes (torchrun) and K accumulation steps a step consumes W*K*b images. Micro-batch q = W*k +
rank takes items q, q + W*K, ... of the step's block of the shuffled data set and rows q, q + W*K,
... of the noise (drawn for the whole block on every process from one seeded generator), has its
own sort, padding, BatchNorm statistics and batch-coupled loss terms (the wrong-caption pairs and
DAMSM's in-batch negatives), and the gradients are averaged. So W processes x K steps compute exactly what
1 process x W*K accumulation steps computes, whatever W and K; a single micro-batch of W*K*b
differs (its BN statistics and negatives span the whole block).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import Config
from ..data import Batch, collate
from ..io import atomic_write_text
from ..losses import KL_loss, discriminator_loss, generator_loss
from ..models import D_NET64, D_NET128, D_NET256, G_DCGAN, G_NET, weights_init
from ..visualize import attention_figure, image_grid
from . import checkpoint as ckpt
from .distributed import DistInfo, all_mean, any_rank, convert_sync_batchnorm, gather_objects

__all__ = ["TrainOptions", "GANTrainer", "build_generator", "build_discriminators", "collate_shards"]

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainOptions:
    """How to run training (everything that is not the model/data configuration).

    out_dir: snapshots, ``netG_epoch_{e}.pth``, ``log.jsonl`` and ``samples/`` go here.
    max_epochs: default ``cfg.TRAIN.MAX_EPOCH``; snapshot_every (epochs): default
        ``cfg.TRAIN.SNAPSHOT_INTERVAL`` (a snapshot after epoch index e when e % it == 0, and one
        at the end); sample_every (steps, 0 = only at the end); log_every (steps).
    max_minutes: stop after this much training time (then a final snapshot); None = no limit.
    amp: None, "bf16" or "fp16" (with a GradScaler); compile: a torch.compile backend name
        ("inductor") or None; accum_steps: micro-batches per step (see the module docstring).
    sync_bn: SyncBatchNorm across processes (CUDA only).
    workers: DataLoader workers (default ``cfg.WORKERS``).
    """

    out_dir: str
    seed: int = 100
    device: str = "cpu"
    max_epochs: Optional[int] = None
    snapshot_every: Optional[int] = None
    sample_every: int = 1000
    log_every: int = 1
    max_minutes: Optional[float] = None
    amp: Optional[str] = None
    channels_last: bool = False
    compile: Optional[str] = None
    accum_steps: int = 1
    sync_bn: bool = False
    ema_decay: float = 0.999
    workers: Optional[int] = None
    num_samples: int = 8
    progress: bool = True

    def __post_init__(self) -> None:
        if self.amp not in (None, *AMP_DTYPES):
            raise ValueError(f"amp: expected None, 'bf16' or 'fp16', got {self.amp!r}")
        for name in ("accum_steps", "log_every", "num_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected in [0, 1), got {self.ema_decay}")


def build_generator(cfg: Config) -> nn.Module:
    """G_NET (or G_DCGAN when ``GAN.B_DCGAN``), initialised as the original (weights_init)."""
    netG = G_DCGAN(cfg) if cfg.GAN.B_DCGAN else G_NET(cfg)
    netG.apply(weights_init)
    return netG


def build_discriminators(cfg: Config) -> list[nn.Module]:
    """One D per stage (64/128/256 px), or for G_DCGAN one D of the final size without the
    unconditional head; initialised with weights_init."""
    classes = (D_NET64, D_NET128, D_NET256)
    if cfg.GAN.B_DCGAN:
        netsD = [classes[cfg.TREE.BRANCH_NUM - 1](cfg, b_jcu=False)]
    else:
        netsD = [cls(cfg) for cls in classes[: cfg.TREE.BRANCH_NUM]]
    for netD in netsD:
        netD.apply(weights_init)
    return netsD


def collate_shards(samples: Sequence[Any], shards: int) -> list[Batch]:
    """Items ``k, k + shards, ...`` of ``samples`` -> micro-batch k, each collated (sorted by length)."""
    return [collate(samples[k::shards]) for k in range(shards)]


class _FloatOutputs(nn.Module):
    """Runs ``module`` under autocast and returns its tensors as float32 (the BCE and DAMSM losses
    then run outside autocast, where BCE is allowed). D's heads are wrapped the same way."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype) -> None:
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype
        for head in ("COND_DNET", "UNCOND_DNET"):
            if hasattr(module, head):
                inner = getattr(module, head)
                setattr(self, head, None if inner is None else _FloatOutputs(inner, device_type, dtype))

    def forward(self, *args: Any) -> Any:
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = self.module(*args)
        return _to_float(out)


def _to_float(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(o) for o in out)
    return out


class _DiscriminatorLoss(nn.Module):
    """``discriminator_loss`` as a module, so that DDP sees every D parameter used in one forward."""

    def __init__(self, netD: nn.Module) -> None:
        super().__init__()
        self.netD = netD

    def forward(self, real: Tensor, fake: Tensor, cond: Tensor, real_labels: Tensor, fake_labels: Tensor) -> Tensor:
        return discriminator_loss(self.netD, real, fake, cond, real_labels, fake_labels)


@dataclass
class _MicroBatch:
    imgs: list[Tensor]
    captions: Tensor  # (b, WORDS_NUM), sorted by length
    cap_lens: Tensor  # on the CPU
    class_ids: Tensor
    words_embs: Tensor
    sent_emb: Tensor
    fake_imgs: list[Tensor] = field(default_factory=list)
    mu: Optional[Tensor] = None
    logvar: Optional[Tensor] = None


class GANTrainer:
    """Trains G and the Ds of ``cfg`` on ``dataset`` against frozen DAMSM encoders.

    dataset: a :class:`~attngan_fast.data.CaptionDataset` (items :class:`~attngan_fast.data.Sample`).
    text_encoder: RNN_ENCODER; image_encoder: maps images (B, 3, S, S) to (region features
        (B, E, h, w), code (B, E)); both are frozen and put in eval mode here.
    ixtoword: word per id (for the attention pictures and the snapshot).
    dist_info: from :func:`init_distributed` (default: one process on ``options.device``).
    """

    def __init__(
        self,
        cfg: Config,
        dataset: Dataset,
        text_encoder: nn.Module,
        image_encoder: nn.Module,
        options: TrainOptions,
        ixtoword: Optional[Mapping[int, str] | Sequence[str]] = None,
        dist_info: Optional[DistInfo] = None,
    ) -> None:
        self.cfg = cfg
        self.options = options
        self.dist = dist_info or DistInfo(device=torch.device(options.device))
        self.device = self.dist.device
        self.dataset = dataset
        self.out_dir = Path(options.out_dir)
        self.max_epochs = options.max_epochs if options.max_epochs is not None else cfg.TRAIN.MAX_EPOCH
        self.snapshot_every = options.snapshot_every or cfg.TRAIN.SNAPSHOT_INTERVAL
        self.batch_size = cfg.TRAIN.BATCH_SIZE
        self.shards = self.dist.world_size * options.accum_steps
        self.ixtoword = self._word_list(ixtoword, getattr(text_encoder, "ntoken", None))
        if options.amp == "fp16" and self.device.type == "cpu" and not hasattr(torch.amp, "GradScaler"):
            raise ValueError("amp 'fp16' needs torch.amp.GradScaler")

        _seed_everything(options.seed)  # the same initial weights on every process
        self.netG = build_generator(cfg).to(self.device)
        self.netsD = [d.to(self.device) for d in build_discriminators(cfg)]
        _seed_everything(options.seed + self.dist.rank)  # data augmentation differs per process
        if options.channels_last:
            self.netG.to(memory_format=torch.channels_last)
            for netD in self.netsD:
                netD.to(memory_format=torch.channels_last)
        self.netG_ema = copy.deepcopy(self.netG).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        self.image_encoder = image_encoder.to(self.device).eval().requires_grad_(False)

        lr_g, lr_d = cfg.TRAIN.GENERATOR_LR, cfg.TRAIN.DISCRIMINATOR_LR
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=lr_g, betas=(0.5, 0.999))
        self.optimizersD = [torch.optim.Adam(d.parameters(), lr=lr_d, betas=(0.5, 0.999)) for d in self.netsD]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=options.amp == "fp16")
        self.noise_gen = torch.Generator(self.device).manual_seed(options.seed)

        self.epoch = 0
        self.step = 0
        self.fixed_batch: Optional[dict[str, Tensor]] = None
        self._build_runtime_modules()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _word_list(ixtoword: Optional[Mapping[int, str] | Sequence[str]], n_words: Optional[int]) -> list[str]:
        if ixtoword is None:
            return [str(i) for i in range(n_words or 0)]
        if isinstance(ixtoword, Mapping):
            return [str(ixtoword[i]) for i in range(len(ixtoword))]
        return [str(w) for w in ixtoword]

    def _build_runtime_modules(self) -> None:
        """The callables the step uses: autocast wrappers, DDP wrappers, compiled modules."""
        opts = self.options
        netG: nn.Module = self.netG
        netsD: list[nn.Module] = list(self.netsD)
        if opts.sync_bn and self.dist.distributed:
            netG = convert_sync_batchnorm(netG, self.dist)
            netsD = [convert_sync_batchnorm(d, self.dist) for d in netsD]
            self.netG, self.netsD = netG, netsD
        if opts.compile:
            netG.compile(backend=opts.compile)
            for netD in netsD:
                netD.compile(backend=opts.compile)
                for head in (netD.COND_DNET, netD.UNCOND_DNET):
                    if head is not None:
                        head.compile(backend=opts.compile)
        image_encoder: nn.Module = self.image_encoder
        if opts.amp:
            dtype = AMP_DTYPES[opts.amp]
            netG = _FloatOutputs(netG, self.device.type, dtype)
            netsD = [_FloatOutputs(d, self.device.type, dtype) for d in netsD]
            image_encoder = _FloatOutputs(image_encoder, self.device.type, dtype)
        d_losses = [_DiscriminatorLoss(d) for d in netsD]
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            netG = DistributedDataParallel(netG, device_ids=ids)
            d_losses = [DistributedDataParallel(m, device_ids=ids) for m in d_losses]
        self._G = netG
        self._netsD_for_G = netsD
        self._d_losses = d_losses
        self._image_encoder = image_encoder

    # ------------------------------------------------------------------ data
    def _loader(self, epoch: int) -> DataLoader:
        sampler = DistributedSampler(
            self.dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True,
            seed=self.options.seed, drop_last=False,
        )
        sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.options.seed * 1_000_003 + epoch)
        workers = self.options.workers if self.options.workers is not None else self.cfg.WORKERS
        loader = DataLoader(
            self.dataset, batch_size=self.batch_size * self.options.accum_steps, sampler=sampler,
            num_workers=workers, drop_last=True, pin_memory=self.device.type == "cuda", generator=generator,
            collate_fn=functools.partial(collate_shards, shards=self.options.accum_steps),
        )
        if len(loader) == 0:
            raise ValueError(
                f"data set of {len(self.dataset)} items gives no full batch of "
                f"{self.batch_size} x {self.options.accum_steps} accumulation steps on each of "
                f"{self.dist.world_size} processes"
            )
        return loader

    def _micro_batches(self, batches: Sequence[Batch]) -> list[_MicroBatch]:
        K, W, b = self.options.accum_steps, self.dist.world_size, self.batch_size
        cfg = self.cfg
        # noise for the whole block of W*K*b images, identical on every process
        noise_all = torch.randn(W * K * b, cfg.GAN.Z_DIM, generator=self.noise_gen, device=self.device)
        eps_all = torch.randn(W * K * b, cfg.GAN.CONDITION_DIM, generator=self.noise_gen, device=self.device)
        memory_format = torch.channels_last if self.options.channels_last else torch.contiguous_format
        out = []
        for k, batch in enumerate(batches):
            shard = W * k + self.dist.rank
            imgs = [im.to(self.device, non_blocking=True).contiguous(memory_format=memory_format) for im in batch.imgs]
            captions = batch.captions.to(self.device, non_blocking=True)
            with torch.no_grad():
                words_embs, sent_emb = self.text_encoder(captions, batch.cap_lens)
            mb = _MicroBatch(imgs, captions, batch.cap_lens, batch.class_ids.to(self.device), words_embs, sent_emb)
            mask = captions[:, : words_embs.size(2)] == 0  # contiguous, like every other T's mask
            if self.options.compile:  # one graph of G for every longest-caption length
                torch._dynamo.maybe_mark_dynamic(words_embs, 2)
                torch._dynamo.maybe_mark_dynamic(mask, 1)
            mb.fake_imgs, _, mb.mu, mb.logvar = self._G(
                noise_all[shard :: W * K], sent_emb, words_embs, mask, eps_all[shard :: W * K]
            )
            out.append(mb)
        return out

    # ------------------------------------------------------------------ one step
    def train_step(self, batches: Sequence[Batch]) -> dict[str, Tensor]:
        """One optimizer step of every D and of G on this process's K micro-batches of b items.

        Returns the losses (detached scalars, averaged over micro-batches; not over processes).
        """
        K = self.options.accum_steps
        micro = self._micro_batches(batches)
        if self.fixed_batch is None:
            n = min(self.options.num_samples, micro[0].captions.size(0))
            width = int(micro[0].cap_lens[:n].max())
            self.fixed_batch = {"captions": micro[0].captions[:n, :width].cpu(), "cap_lens": micro[0].cap_lens[:n].clone()}
        b = micro[0].captions.size(0)
        real_labels = torch.ones(b, device=self.device)
        fake_labels = torch.zeros(b, device=self.device)
        match_labels = torch.arange(b, device=self.device)
        logs: dict[str, Tensor] = {}
        offset = len(micro[0].imgs) - len(self.netsD)

        for i, (d_loss, optimizer) in enumerate(zip(self._d_losses, self.optimizersD)):
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=self.device)
            for k, mb in enumerate(micro):
                sync = contextlib.nullcontext() if k == K - 1 or not self.dist.distributed else d_loss.no_sync()
                with sync:
                    errD = d_loss(mb.imgs[offset + i], mb.fake_imgs[i].detach(), mb.sent_emb, real_labels, fake_labels)
                    self.scaler.scale(errD / K).backward()
                total = total + errD.detach()
            self.scaler.step(optimizer)
            logs[f"errD{i}"] = total / K

        self.optimizerG.zero_grad(set_to_none=True)
        for netD in self.netsD:
            netD.requires_grad_(False)
        errG_total = torch.zeros((), device=self.device)
        parts: dict[str, Tensor] = {}
        for mb in micro:
            errG, g_logs = generator_loss(
                self._netsD_for_G, self._image_encoder, mb.fake_imgs, real_labels, mb.words_embs, mb.sent_emb,
                match_labels, mb.cap_lens, mb.class_ids, self.cfg,
            )
            kl = KL_loss(mb.mu, mb.logvar)
            errG_total = errG_total + (errG + kl) / K
            for name, value in {**g_logs, "kl": kl.detach()}.items():
                parts[name] = parts.get(name, 0) + value / K
        self.scaler.scale(errG_total).backward()
        for netD in self.netsD:
            netD.requires_grad_(True)
        self.scaler.step(self.optimizerG)
        self.scaler.update()
        self._update_ema()
        logs["errG"] = errG_total.detach()
        logs.update(parts)
        self.step += 1
        return logs

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = self.options.ema_decay
        ema = list(self.netG_ema.parameters())
        torch._foreach_mul_(ema, decay)
        torch._foreach_add_(ema, [p.detach() for p in self.netG.parameters()], alpha=1.0 - decay)

    def ema_state_dict(self) -> dict[str, Tensor]:
        """G's state_dict with the EMA parameters and G's current buffers (what the original saved)."""
        params = dict(self.netG_ema.named_parameters())
        return {k: (params[k].detach() if k in params else v) for k, v in self.netG.state_dict().items()}

    # ------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run epochs ``self.epoch .. max_epochs - 1`` (or until ``max_minutes``); snapshots as the
        original (after epoch e when e % snapshot_every == 0, and at the end). Returns a summary."""
        opts = self.options
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        deadline = None if opts.max_minutes is None else time.monotonic() + 60.0 * opts.max_minutes
        images_per_step = self.shards * self.batch_size
        last: dict[str, float] = {}
        window: list[dict[str, Tensor]] = []
        stopped = False
        start = time.perf_counter()
        tick, tick_step = start, self.step
        for epoch in range(self.epoch, self.max_epochs):
            loader = self._loader(epoch)
            bar = _progress(len(loader), f"epoch {epoch}", enabled=main and opts.progress)
            for batch in loader:
                window.append(self.train_step(batch))
                if self.step % opts.log_every == 0:
                    now = time.perf_counter()
                    last = self._log(window, epoch, images_per_step * (self.step - tick_step) / max(now - tick, 1e-9))
                    window, tick, tick_step = [], now, self.step
                    bar.set_postfix({k: f"{v:.3g}" for k, v in last.items() if k not in ("epoch", "step")}, refresh=False)
                bar.update(1)
                if main and opts.sample_every and self.step % opts.sample_every == 0:
                    self.render_samples()
                if deadline is not None and any_rank(time.monotonic() > deadline, self.dist):
                    stopped = True
                    break
            bar.close()
            if main and last:
                _write(f"epoch {epoch}: step {self.step} | " + " ".join(
                    f"{k} {v:.3g}" for k, v in last.items() if k != "imgs_per_s")
                    + f" | {last.get('imgs_per_s', 0.0):.1f} img/s | {time.perf_counter() - start:.0f} s")
            if stopped:
                break
            self.epoch = epoch + 1
            if epoch % self.snapshot_every == 0 and epoch + 1 < self.max_epochs:
                self.save(label=epoch)
        final = self.save(label=self.epoch)
        if main:
            self.render_samples()
        return {"epochs": self.epoch, "steps": self.step, "seconds": time.perf_counter() - start,
                "stopped_by_time": stopped, "last": last, "snapshot": str(final)}

    def _log(self, window: list[dict[str, Tensor]], epoch: int, imgs_per_s: float) -> dict[str, float]:
        names = list(window[0])
        values = torch.stack([torch.stack([w[n].float() for n in names]) for w in window]).mean(0)
        values = all_mean(values, self.dist).tolist()
        record = {"epoch": epoch, "step": self.step, **dict(zip(names, values)), "imgs_per_s": imgs_per_s}
        if self.dist.is_main:
            with open(self.out_dir / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        return {k: v for k, v in record.items() if k in ("errD0", "errG", "w_loss", "s_loss", "kl", "imgs_per_s")}

    # ------------------------------------------------------------------ pictures
    @torch.no_grad()
    def render_samples(self, tag: Optional[str] = None) -> list[Path]:
        """Sample grids (one PNG per stage) and attention pictures of the fixed captions, drawn by
        the EMA generator in eval mode with fixed noise; written to ``out_dir/samples``."""
        if self.fixed_batch is None:
            return []
        self._sync_ema_buffers()
        caps = self.fixed_batch["captions"].to(self.device)
        lens = self.fixed_batch["cap_lens"]
        n = caps.size(0)
        gen = torch.Generator(self.device).manual_seed(self.options.seed)
        noise = torch.randn(n, self.cfg.GAN.Z_DIM, generator=gen, device=self.device)
        eps = torch.randn(n, self.cfg.GAN.CONDITION_DIM, generator=gen, device=self.device)
        words_embs, sent_emb = self.text_encoder(caps, lens)
        fakes, atts, _, _ = self.netG_ema(noise, sent_emb, words_embs, caps == 0, eps)
        folder = self.out_dir / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        tag = tag or f"step_{self.step:07d}"
        paths = []
        for i, images in enumerate(fakes):
            paths.append(folder / f"{tag}_g{i}.png")
            image_grid(images).save(paths[-1])
        figures = []
        for s in range(min(n, 4)):
            words = [self.ixtoword[int(t)] for t in caps[s, : int(lens[s])]]
            figures.append(attention_figure([f[s] for f in fakes], [a[s] for a in atts], words))
        paths.append(folder / f"{tag}_attention.png")
        _stack_vertically(figures).save(paths[-1])
        return paths

    def _sync_ema_buffers(self) -> None:
        for ema_buf, buf in zip(self.netG_ema.buffers(), self.netG.buffers()):
            ema_buf.copy_(buf)

    # ------------------------------------------------------------------ snapshots
    def save(self, label: int) -> Path:
        """Write ``checkpoint_epoch_{label}.pt`` and ``netG_epoch_{label}.pth`` (EMA G, original
        format). Collective: every process calls it (the RNG states of all ranks are stored)."""
        rng = gather_objects(ckpt.capture_rng(self.noise_gen), self.dist)
        path = ckpt.snapshot_path(self.out_dir, label)
        if not self.dist.is_main:
            return path
        ema = self.ema_state_dict()
        ckpt.save_snapshot(path, {
            "epoch": self.epoch,
            "step": self.step,
            "label": label,
            "netG": self.netG.state_dict(),
            "netG_ema": ema,
            "netsD": [d.state_dict() for d in self.netsD],
            "optimizerG": self.optimizerG.state_dict(),
            "optimizersD": [o.state_dict() for o in self.optimizersD],
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng,
            "config": self.cfg.to_dict(),
            "options": asdict(self.options),
            "text_encoder": self.text_encoder.state_dict(),
            "ixtoword": self.ixtoword,
            "fixed_batch": self.fixed_batch,
        })
        ckpt.export_original_netG(self.out_dir / f"netG_epoch_{label}.pth", ema)
        return path

    def resume(self, path: str | Path) -> None:
        """Continue from a snapshot: weights, EMA, optimizers, scaler, epoch, step and RNG states.

        Resuming at an epoch boundary with the same options and number of processes reproduces
        the uninterrupted run exactly. ``log.jsonl`` is cut back to the snapshot's step.
        """
        snap = ckpt.load_snapshot(path, map_location=self.device)
        _check_same_model(snap["config"], self.cfg.to_dict(), path)
        self.netG.load_state_dict(snap["netG"])
        params = dict(self.netG_ema.named_parameters())
        with torch.no_grad():
            for name, value in snap["netG_ema"].items():
                if name in params:
                    params[name].copy_(value)
        for netD, state in zip(self.netsD, snap["netsD"], strict=True):
            netD.load_state_dict(state)
        self.optimizerG.load_state_dict(snap["optimizerG"])
        for optimizer, state in zip(self.optimizersD, snap["optimizersD"], strict=True):
            optimizer.load_state_dict(state)
        if snap["scaler"] is not None:
            self.scaler.load_state_dict(snap["scaler"])
        self.epoch, self.step = snap["epoch"], snap["step"]
        self.fixed_batch = snap["fixed_batch"]
        rng = snap["rng"]
        if len(rng) == self.dist.world_size:
            ckpt.restore_rng(rng[self.dist.rank], self.noise_gen)
        else:  # another number of processes: the noise stream continues, the rest is reseeded
            self.noise_gen.set_state(rng[0]["noise"])
            _seed_everything(self.options.seed + 7919 * self.step + self.dist.rank)
        if self.dist.is_main:
            _truncate_log(self.out_dir / "log.jsonl", self.step)


def _check_same_model(saved: Mapping[str, Any], current: Mapping[str, Any], path: Any) -> None:
    keys = [("GAN", k) for k in ("DF_DIM", "GF_DIM", "Z_DIM", "CONDITION_DIM", "R_NUM", "B_DCGAN")]
    keys += [("TEXT", "EMBEDDING_DIM"), ("TREE", "BRANCH_NUM")]
    differ = [f"{a}.{b}: {saved[a][b]!r} in the snapshot, {current[a][b]!r} now"
              for a, b in keys if saved[a][b] != current[a][b]]
    if differ:
        raise ValueError(f"{path}: the snapshot's model differs from the configuration: " + "; ".join(differ))


def _truncate_log(path: Path, step: int) -> None:
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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _stack_vertically(images: list) -> Any:
    from PIL import Image

    width = max(im.width for im in images)
    out = Image.new("RGB", (width, sum(im.height for im in images)), (255, 255, 255))
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height
    return out


def _write(line: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(line)


class _NoProgress:
    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, leave=False)


# ---------------------------------------------------------------------------------------- running
def train_gan(
    cfg: Config,
    options: TrainOptions,
    *,
    resume: Optional[str | Path] = None,
    dist_info: Optional[DistInfo] = None,
) -> dict[str, Any]:
    """Train the GAN of ``cfg`` on its data set against the DAMSM encoders of ``cfg.TRAIN.NET_E``
    (its ``image_encoder`` twin next to it); ``resume``: a snapshot to continue from.

    Writes ``run.json`` (config, options, summary) next to the snapshots. Returns the summary.
    """
    from ..data import build_dataset
    from .damsm import load_encoders

    if not cfg.TRAIN.NET_E:
        raise ValueError("TRAIN.NET_E is empty: the GAN trains against a pre-trained DAMSM text encoder "
                         "(text_encoder<N>.pth, with image_encoder<N>.pth next to it); run "
                         "`attngan-fast pretrain-damsm` first and set TRAIN.NET_E")
    info = dist_info or DistInfo(device=torch.device(options.device))
    dataset = build_dataset(cfg, "train", seed=options.seed)
    text_encoder, image_encoder = load_encoders(cfg, dataset.n_words, cfg.TRAIN.NET_E, device=info.device)
    trainer = GANTrainer(cfg, dataset, text_encoder, image_encoder, options, ixtoword=dataset.ixtoword,
                         dist_info=info)
    if resume is not None:
        trainer.resume(resume)
    summary = trainer.train()
    if info.is_main:
        from ..backend import get_backend
        from ..io import atomic_write_json

        atomic_write_json(Path(options.out_dir) / "run.json", {
            "config": cfg.to_dict(), "options": asdict(options), "backend": get_backend(),
            "world_size": info.world_size, "torch": torch.__version__, **summary,
        })
    return summary


def register_cli(subparsers: Any) -> None:
    """``attngan-fast train --cfg ... --out DIR [options]`` (also under ``torchrun``)."""
    from ..cli import add_config_arguments, add_threads_argument

    p = subparsers.add_parser(
        "train", help="train the AttnGAN generator and discriminators",
        description="Train G and the Ds (spec §7.1) against pre-trained DAMSM encoders (TRAIN.NET_E). "
                    "Multi-GPU: torchrun --nproc_per_node N -m attngan_fast.cli train ...",
    )
    add_config_arguments(p, required=False)
    p.add_argument("--out", required=True, help="output folder: snapshots, netG_epoch_*.pth, log.jsonl, samples/")
    p.add_argument("--resume", nargs="?", const="latest", default=None, metavar="SNAPSHOT",
                   help="continue from a snapshot (default: the latest in --out); the config and options "
                        "come from it unless given again")
    p.add_argument("--seed", type=int, default=None, help="seed (default: random in 1..10000, as the original)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--backend", choices=("fast", "reference"), default="fast", help="fused kernels or the original math")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default=None, help="mixed precision (fp16 with a GradScaler)")
    p.add_argument("--channels-last", action="store_true", default=None, help="channels_last memory format")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile G and the Ds (default backend: inductor)")
    p.add_argument("--accum-steps", type=int, default=None, help="micro-batches of TRAIN.BATCH_SIZE per step (1)")
    p.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm across processes (CUDA)")
    p.add_argument("--max-epochs", type=int, default=None, help="default TRAIN.MAX_EPOCH")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this much training time")
    p.add_argument("--snapshot-every", type=int, default=None, help="epochs (default TRAIN.SNAPSHOT_INTERVAL)")
    p.add_argument("--sample-every", type=int, default=None, help="steps between sample grids (1000; 0: at the end)")
    p.add_argument("--log-every", type=int, default=None, help="steps between log.jsonl records (1)")
    p.add_argument("--workers", type=int, default=None, help="data loader workers (default WORKERS)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bars")
    add_threads_argument(p)
    p.set_defaults(run=_run_cli)


_OPTION_ARGS = ("seed", "device", "amp", "channels_last", "compile", "accum_steps", "sync_bn", "max_epochs",
                "max_minutes", "snapshot_every", "sample_every", "log_every", "workers", "progress")


def _run_cli(args: Any) -> int:
    from ..backend import set_backend
    from ..cli import config_from_args, set_threads
    from ..config import from_dict
    from .distributed import init_distributed

    set_backend(args.backend)
    set_threads(args.threads)
    given = {name: getattr(args, name) for name in _OPTION_ARGS if getattr(args, name) is not None}
    resume, base = None, {}
    if args.resume is not None:
        resume = ckpt.find_latest(args.out) if args.resume == "latest" else Path(args.resume)
        if resume is None:
            raise SystemExit(f"error: --resume: no snapshot (checkpoint_epoch_*.pt) in {args.out}")
        snap = ckpt.load_snapshot(resume)
        base = {k: v for k, v in snap["options"].items() if k != "out_dir"}
        cfg = config_from_args(args, base=from_dict(snap["config"]))
    elif args.cfg:
        cfg = config_from_args(args)
    else:
        raise SystemExit("error: train needs --cfg (or --resume)")
    info = init_distributed(given.get("device", base.get("device") if resume else None))
    if "seed" not in given and "seed" not in base:  # as the original: random, the same on every rank
        given["seed"] = gather_objects(random.randint(1, 10000), info)[0]
    options = {**base, **given, "out_dir": args.out, "device": info.device.type}
    try:
        summary = train_gan(cfg, TrainOptions(**options), resume=resume, dist_info=info)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    if info.is_main:
        print(f"trained {summary['epochs']} epochs, {summary['steps']} steps in {summary['seconds']:.0f} s; "
              f"last snapshot {summary['snapshot']}")
    return 0
