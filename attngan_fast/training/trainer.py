"""The AttnGAN training loop (original ``trainer.condGANTrainer.train``, docs/original_attngan.md §7.1).

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

Adam(lr 2e-4, betas (0.5, 0.999)) for G and each D, as the original: the multi-tensor ("foreach")
implementation, bit for bit the original's per-parameter loop, and on the "fast" backend the fused
one on the CPU and CUDA (the same update in one kernel, ~6x faster on the CPU; within 5e-7 relative
of the loop per step, :func:`use_fused_adam`). The Ds' parameters are frozen
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

Snapshots (docs/original_attngan.md §7.1): after epoch e when ``e % snapshot_every == 0`` (epoch 0
included, the last epoch too) with label e, and a final one with label ``max_epochs``. A run
stopped early (``max_minutes``, SIGINT / SIGTERM: :mod:`.stop`) ends with a snapshot labelled
with the epoch in progress (with the epochs completed when it stops at an epoch's end); it records
the batches done in that epoch, and resuming it skips them: the data order of an epoch depends
only on (seed, epoch), so the resumed run is bitwise the uninterrupted one.

Non-finite values (a loss, a D probability, a gradient) are checked before every optimizer step;
see ``TrainOptions.on_nan``.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from ..backend import get_backend
from ..checkpoint import seed_everything, stream_seed
from ..config import Config
from ..data import Batch, build_dataset, collate
from ..io import atomic_write_json
from ..losses import KL_loss, generator_loss
from ..models.folding import FrozenImageEncoder
from ..visualize import write_sample_pictures
from .builders import build_discriminators, build_generator
from .damsm import load_encoders
from .distributed import DistInfo, all_mean, any_rank, convert_sync_batchnorm, gather_objects, max_over_ranks
from .options import AMP_DTYPES, TrainOptions
from .run_folder import RunFolderError, open_run_folder
from .snapshots import continue_from_original, grow_from_snapshot, resume_trainer, save_trainer
from .stop import StopSignals
from .wrappers import DiscriminatorLoss, FiniteHeads, FloatOutputs

__all__ = ["GANTrainer", "NonFiniteLossError", "collate_shards", "train_gan"]


class NonFiniteLossError(FloatingPointError):
    """A loss, a D probability or a gradient of a step is not finite (``on_nan="stop"``); the
    optimizer step was not taken. ``step``: the step's number (1-based); ``name``: what failed."""

    def __init__(self, message: str, step: int, name: str) -> None:
        super().__init__(message)
        self.step = step
        self.name = name


def collate_shards(samples: Sequence[Any], shards: int) -> list[Batch]:
    """Items ``k, k + shards, ...`` of ``samples`` -> micro-batch k, each collated (sorted by length)."""
    return [collate(samples[k::shards]) for k in range(shards)]


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


# devices with a fused Adam kernel that the fast backend uses
FUSED_ADAM = ("cpu", "cuda")


def use_fused_adam(optimizers: Sequence[torch.optim.Optimizer], fused: bool) -> None:
    """Switch Adam optimizers between the fused kernel (``fused``) and the multi-tensor one.

    Both compute the same update (their state is interchangeable); the multi-tensor one is bit for
    bit torch's per-parameter loop, the fused one rounds differently (within 5e-7 relative per step).
    The fused kernel keeps the step count on the parameter's device (the others may keep it on the
    CPU: a run resumed or switched from the reference backend), so it is moved there. Optimizers
    already in the wanted mode are left alone (the per-step call costs a flag check).
    """
    for optimizer in optimizers:
        if all(group["fused"] is fused for group in optimizer.param_groups):
            continue
        for group in optimizer.param_groups:
            group["fused"], group["foreach"] = fused, not fused
        if fused:
            for param, state in optimizer.state.items():
                step = state.get("step")
                if isinstance(step, torch.Tensor) and step.device != param.device:
                    state["step"] = step.to(param.device)


def any_non_finite(tensors: Sequence[Tensor]) -> Tensor:
    """Whether any element of ``tensors`` is inf or NaN, as a bool tensor, without a host sync: one
    fused pass per device and dtype (GradScaler's check, unscaling by exactly 1: the values stay
    bit for bit; 13-16x faster than per-tensor inf-norms on the demo's G and D64 gradients, CPU)."""
    groups: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    found = []
    for (device, _), group in groups.items():
        flag = torch.zeros((), device=device)
        torch._amp_foreach_non_finite_check_and_unscale_(group, flag, torch.ones((), device=device))
        found.append(flag.to(tensors[0].device))
    return torch.stack(found).any()


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

        seed_everything(options.seed)  # the same initial weights on every process
        self.netG = build_generator(cfg).to(self.device)
        self.netsD = [d.to(self.device) for d in build_discriminators(cfg)]
        seed_everything(options.seed + self.dist.rank)  # data augmentation differs per process
        if options.channels_last:
            self.netG.to(memory_format=torch.channels_last)
            for netD in self.netsD:
                netD.to(memory_format=torch.channels_last)
        self.netG_ema = copy.deepcopy(self.netG).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        self.image_encoder = image_encoder.to(self.device).eval().requires_grad_(False)

        lr_g, lr_d = cfg.TRAIN.GENERATOR_LR, cfg.TRAIN.DISCRIMINATOR_LR
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=lr_g, betas=(0.5, 0.999), foreach=True)
        self.optimizersD = [torch.optim.Adam(d.parameters(), lr=lr_d, betas=(0.5, 0.999), foreach=True)
                            for d in self.netsD]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=options.amp == "fp16")
        # G's noise: its own stream, not a replay of the global RNG's (seeded with options.seed above)
        self.noise_gen = torch.Generator(self.device).manual_seed(stream_seed(options.seed, "noise"))

        self.epoch = 0  # the epoch in progress (= epochs completed between epochs)
        self.batch = 0  # batches of it done
        self.step = 0
        self.skipped = 0  # optimizer steps skipped for non-finite values (on_nan="skip")
        self.fixed_batch: Optional[dict[str, Tensor]] = None
        self._build_runtime_modules()
        # FID / KID / R-precision every options.eval_every epochs (main process only)
        self.evaluator = None
        if options.eval_every and self.dist.is_main:
            from ..metrics.training_eval import EpochEvaluator

            self.evaluator = EpochEvaluator(cfg, options.eval_every, options.eval_images, self.device,
                                            seed=options.seed, progress=options.progress)

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
        # BatchNorm folded on "fast"; float32 outputs in its own precision (encoder_amp, else amp's)
        encoder_amp = opts.encoder_amp or opts.amp
        image_encoder: nn.Module = FrozenImageEncoder(self.image_encoder,
                                                      AMP_DTYPES[encoder_amp] if encoder_amp else None)
        if opts.amp:
            dtype = AMP_DTYPES[opts.amp]
            netG = FloatOutputs(netG, self.device.type, dtype)
            netsD = [FloatOutputs(d, self.device.type, dtype) for d in netsD]
        netsD = [FiniteHeads(d) for d in netsD]
        self._guards = netsD
        d_losses = [DiscriminatorLoss(d) for d in netsD]
        if self.dist.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            netG = DistributedDataParallel(netG, device_ids=ids)
            d_losses = [DistributedDataParallel(m, device_ids=ids) for m in d_losses]
        self._G = netG
        self._netsD_for_G = netsD
        self._d_losses = d_losses
        self._image_encoder = image_encoder

    # ------------------------------------------------------------------ data
    def _loader(self, epoch: int, start: int = 0) -> DataLoader:
        """The batches of ``epoch`` from batch ``start`` on (the order depends only on seed and epoch)."""
        sampler = DistributedSampler(
            self.dataset, num_replicas=self.dist.world_size, rank=self.dist.rank, shuffle=True,
            seed=self.options.seed, drop_last=False,
        )
        sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        generator = torch.Generator().manual_seed(self.options.seed * 1_000_003 + epoch)
        workers = self.options.workers if self.options.workers is not None else self.cfg.WORKERS
        per_batch = self.batch_size * self.options.accum_steps
        if len(sampler) // per_batch == 0:
            raise ValueError(
                f"data set of {len(self.dataset)} items gives no full batch of "
                f"{self.batch_size} x {self.options.accum_steps} accumulation steps on each of "
                f"{self.dist.world_size} processes"
            )
        if start > len(sampler) // per_batch:
            raise ValueError(f"epoch {epoch} has {len(sampler) // per_batch} batches, cannot start at batch {start}")
        return DataLoader(
            self.dataset, batch_size=per_batch, sampler=list(sampler)[start * per_batch:] if start else sampler,
            num_workers=workers, drop_last=True, pin_memory=self.device.type == "cuda", generator=generator,
            collate_fn=functools.partial(collate_shards, shards=self.options.accum_steps),
        )

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
        use_fused_adam([self.optimizerG, *self.optimizersD], get_backend() == "fast" and self.device.type in FUSED_ADAM)
        skipped, kept = self.skipped, None
        if self.options.on_nan == "skip":
            buffers = [b for m in (self.netG, *self.netsD) for b in m.buffers()]
            kept = [b.clone() for b in buffers]
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

        stepped = False
        for i, (d_loss, optimizer) in enumerate(zip(self._d_losses, self.optimizersD)):
            optimizer.zero_grad(set_to_none=True)
            self._guards[i].clear()
            total = torch.zeros((), device=self.device)
            for k, mb in enumerate(micro):
                sync = contextlib.nullcontext() if k == K - 1 or not self.dist.distributed else d_loss.no_sync()
                with sync:
                    errD = d_loss(mb.imgs[offset + i], mb.fake_imgs[i].detach(), mb.sent_emb, real_labels, fake_labels)
                    self.scaler.scale(errD / K).backward()
                total = total + errD.detach()
            logs[f"errD{i}"] = total / K
            if self._finite(f"errD{i}", {f"errD{i}": logs[f"errD{i}"]}, self.netsD[i], [self._guards[i]]):
                self.scaler.step(optimizer)
                stepped = True
            else:  # a skipped update logs NaN
                logs[f"errD{i}"] = torch.full_like(logs[f"errD{i}"], float("nan"))

        self.optimizerG.zero_grad(set_to_none=True)
        for netD in self.netsD:
            netD.requires_grad_(False)
        for guard in self._guards:
            guard.clear()
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
        g_ok = self._finite("errG", {"errG": errG_total.detach(), **parts}, self.netG, self._guards)
        if g_ok:
            self.scaler.step(self.optimizerG)
            stepped = True
        if stepped:  # GradScaler.update needs a step to have run
            self.scaler.update()
        if kept is not None and self.skipped > skipped:  # a skipped batch leaves no BatchNorm statistics
            with torch.no_grad():
                torch._foreach_copy_(buffers, kept)
        self._update_ema()
        logs["errG"] = errG_total.detach() if g_ok else torch.full_like(errG_total, float("nan"))
        logs.update(parts)
        self.step += 1
        return logs

    def _finite(self, name: str, losses: Mapping[str, Tensor], module: nn.Module, guards: Sequence[FiniteHeads]) -> bool:
        """Whether the optimizer step of ``name`` (on ``module``'s gradients) may run: its losses,
        the probabilities of the D heads in ``guards`` and (without a GradScaler, which skips
        overflowing steps itself) the gradients are finite on every process. Otherwise raise
        :class:`NonFiniteLossError` (on_nan "stop") or count a skipped step (False)."""
        bad = ~torch.isfinite(torch.stack([v.float() for v in losses.values()])).all()
        flags = [g.bad for g in guards if g.bad is not None]
        if flags:
            bad = bad | torch.stack(flags).any()
        if not self.scaler.is_enabled():
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            if grads:
                bad = bad | any_non_finite(grads).to(bad.device)
        if not any_rank(bool(bad), self.dist):
            return True
        what = [f"{k} = {float(v)}" for k, v in losses.items() if not torch.isfinite(v)]
        nan_heads = [f"D{self._guards.index(g)}" for g in guards if g.bad is not None and bool(g.bad)]
        if nan_heads:  # the guards gave BCE 0.5 there: the loss is really NaN
            what.append(f"{name} = nan (NaN probabilities of {', '.join(nan_heads)})")
        if not what:
            what = [f"non-finite gradients of the {name} update"]
        if self.options.on_nan == "stop":
            raise NonFiniteLossError(
                f"training diverged at step {self.step + 1} (epoch {self.epoch}, batch {self.batch + 1}), "
                f"{name} update: {'; '.join(what)}; the update was not applied and no snapshot was written "
                "(lower the learning rates, or skip such steps with on_nan 'skip' / --on-nan skip)",
                self.step + 1, name)
        self.skipped += 1
        return False

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
        """Run from the current epoch and batch to ``max_epochs`` (or until ``max_minutes``, SIGINT
        or SIGTERM); snapshots as described in the module docstring. Returns a summary:
        epochs, steps, seconds, stopped_by_time, interrupted (the signal's name or None), skipped,
        last (the last logged losses), snapshot (the final snapshot's path)."""
        with StopSignals() as signals:
            return self._train(signals)

    def _train(self, signals: StopSignals) -> dict[str, Any]:
        opts = self.options
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        deadline = None if opts.max_minutes is None else time.monotonic() + 60.0 * opts.max_minutes

        def poll() -> tuple[int, bool]:  # (signal number or 0, time is up), agreed by every process
            late = deadline is not None and time.monotonic() > deadline
            signum, late = max_over_ranks([float(signals.received or 0), float(late)], self.dist)
            return int(signum), bool(late)

        images_per_step = self.shards * self.batch_size
        last: dict[str, float] = {}
        window: list[dict[str, Tensor]] = []
        signum, stopped = 0, False
        start = time.perf_counter()
        tick, tick_step = start, self.step
        for epoch in range(self.epoch, self.max_epochs):
            loader = self._loader(epoch, start=self.batch)
            n_batches = self.batch + len(loader)
            bar = tqdm(total=n_batches, initial=self.batch, desc=f"epoch {epoch}", unit="step", dynamic_ncols=True,
                       leave=False, disable=not (main and opts.progress))
            for batch in loader:
                window.append(self.train_step(batch))
                self.batch += 1
                if self.step % opts.log_every == 0:
                    now = time.perf_counter()
                    last = self._log(window, epoch, images_per_step * (self.step - tick_step) / max(now - tick, 1e-9))
                    window, tick, tick_step = [], now, self.step
                    bar.set_postfix({k: f"{v:.3g}" for k, v in last.items() if k not in ("epoch", "step")}, refresh=False)
                bar.update(1)
                if main and opts.sample_every and self.step % opts.sample_every == 0:
                    self.render_samples()
                signum, stopped = poll()
                if signum or stopped:
                    break
            bar.close()
            if main and last:
                tqdm.write(f"epoch {epoch}: step {self.step} | " + " ".join(
                    f"{k} {v:.3g}" for k, v in last.items() if k != "imgs_per_s")
                    + f" | {last.get('imgs_per_s', 0.0):.1f} img/s | {time.perf_counter() - start:.0f} s")
            if self.batch < n_batches:  # stopped within the epoch
                break
            self.epoch, self.batch = epoch + 1, 0
            if self.evaluator is not None:
                self.evaluator(self, epoch)
            if epoch % self.snapshot_every == 0:
                self.save(label=epoch)
            if not (signum or stopped):
                signum, stopped = poll()  # a signal during the snapshot
            if signum or stopped:
                break
        final = self.save(label=self.epoch, interrupted=bool(signum))
        if main:
            self.render_samples()
        return {"epochs": self.epoch, "steps": self.step, "seconds": time.perf_counter() - start,
                "stopped_by_time": stopped and not signum,
                "interrupted": signal.Signals(signum).name if signum else None, "skipped": self.skipped,
                "last": last, "snapshot": str(final)}

    def _log(self, window: list[dict[str, Tensor]], epoch: int, imgs_per_s: float) -> dict[str, float]:
        names = list(window[0])
        values = torch.stack([torch.stack([w[n].float() for n in names]) for w in window]).mean(0)
        values = all_mean(values, self.dist).tolist()
        record = {"epoch": epoch, "step": self.step, **dict(zip(names, values)), "imgs_per_s": imgs_per_s,
                  "skipped": self.skipped}
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
        self.sync_ema_buffers()
        caps = self.fixed_batch["captions"].to(self.device)
        lens = self.fixed_batch["cap_lens"]
        n = caps.size(0)
        gen = torch.Generator(self.device).manual_seed(self.options.seed)
        noise = torch.randn(n, self.cfg.GAN.Z_DIM, generator=gen, device=self.device)
        eps = torch.randn(n, self.cfg.GAN.CONDITION_DIM, generator=gen, device=self.device)
        words_embs, sent_emb = self.text_encoder(caps, lens)
        fakes, atts, _, _ = self.netG_ema(noise, sent_emb, words_embs, caps == 0, eps)
        words = [[self.ixtoword[int(t)] for t in caps[s, : int(lens[s])]] for s in range(n)]
        return write_sample_pictures(self.out_dir / "samples", tag or f"step_{self.step:07d}", fakes, atts, words)

    def sync_ema_buffers(self) -> None:
        """Copy G's buffers (BatchNorm running statistics) into the EMA generator (they are not averaged)."""
        for ema_buf, buf in zip(self.netG_ema.buffers(), self.netG.buffers()):
            ema_buf.copy_(buf)

    # ------------------------------------------------------------------ snapshots
    def save(self, label: int, interrupted: bool = False) -> Path:
        """Write the snapshot ``checkpoint_epoch_{label}.pt`` with ``netG_epoch_{label}.pth`` and
        ``netD{i}.pth`` (:func:`~attngan_fast.training.snapshots.save_trainer`); collective."""
        return save_trainer(self, label, interrupted=interrupted)

    def resume(self, path: str | Path) -> None:
        """Continue from a snapshot (:func:`~attngan_fast.training.snapshots.resume_trainer`)."""
        resume_trainer(self, path)

    def continue_from(self, net_g: str | Path, load_netsD: bool) -> None:
        """Continue as the original's ``TRAIN.NET_G`` / ``TRAIN.B_NET_D``
        (:func:`~attngan_fast.training.snapshots.continue_from_original`)."""
        continue_from_original(self, net_g, load_netsD)


def train_gan(
    cfg: Config,
    options: TrainOptions,
    *,
    resume: Optional[str | Path] = None,
    grow_from: Optional[str | Path] = None,
    dist_info: Optional[DistInfo] = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train the GAN of ``cfg`` on its data set against the DAMSM encoders of ``cfg.TRAIN.NET_E``
    (its ``image_encoder`` twin next to it).

    resume: a snapshot to continue from. Without it, ``cfg.TRAIN.NET_G`` (an original-format G
    file, e.g. ``netG_epoch_50.pth``) continues as the original does: G from it, the Ds from the
    ``netD{i}.pth`` next to it when ``TRAIN.B_NET_D``, from epoch 51; a resumed snapshot ignores it.
    grow_from (without resume): a snapshot of this model with fewer stages to start from
    (:func:`~attngan_fast.training.snapshots.grow_from_snapshot`). The output folder is locked for
    the run and must not hold another run unless ``overwrite`` (see :mod:`.run_folder`:
    :class:`~attngan_fast.training.run_folder.RunFolderError`).
    Writes ``run.json`` (config, options, summary) next to the snapshots. Returns the summary
    (:meth:`GANTrainer.train`).
    """
    if not cfg.TRAIN.NET_E:
        raise ValueError("TRAIN.NET_E is empty: the GAN trains against a pre-trained DAMSM text encoder "
                         "(text_encoder<N>.pth, with image_encoder<N>.pth next to it); run "
                         "`attngan-fast pretrain-damsm` first and set TRAIN.NET_E")
    info = dist_info or DistInfo(device=torch.device(options.device))
    net_g = cfg.TRAIN.NET_G if resume is None and cfg.TRAIN.NET_G else None
    with _locked_run_folder(options.out_dir, info, resume=resume, overwrite=overwrite, keep=net_g):
        dataset = build_dataset(cfg, "train", seed=options.seed)
        text_encoder, image_encoder = load_encoders(cfg, dataset.n_words, cfg.TRAIN.NET_E, device=info.device)
        trainer = GANTrainer(cfg, dataset, text_encoder, image_encoder, options, ixtoword=dataset.ixtoword,
                             dist_info=info)
        if resume is not None:
            trainer.resume(resume)
        elif grow_from is not None:
            grow_from_snapshot(trainer, grow_from)
        elif net_g is not None:
            trainer.continue_from(net_g, load_netsD=cfg.TRAIN.B_NET_D)
        summary = trainer.train()
        if info.is_main:
            atomic_write_json(Path(options.out_dir) / "run.json", {
                "config": cfg.to_dict(), "options": asdict(options), "backend": get_backend(),
                "world_size": info.world_size, "torch": torch.__version__, **summary,
            })
    return summary


@contextlib.contextmanager
def _locked_run_folder(out_dir: str | Path, info: DistInfo, **kwargs: Any) -> Iterator[None]:
    """:func:`~.run_folder.open_run_folder` on rank 0, its refusal raised on every rank."""
    with contextlib.ExitStack() as stack:
        error = None
        if info.is_main:
            try:
                stack.enter_context(open_run_folder(out_dir, **kwargs))
            except RunFolderError as e:
                error = str(e)
        error = gather_objects(error, info)[0]
        if error is not None:
            raise RunFolderError(error)
        yield
