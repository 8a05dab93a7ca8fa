"""The model side of serving: requests -> jobs (word ids and their own noise) -> one batched forward.

Every job draws its noise z and CA noise eps from a ``torch.Generator`` seeded with the request's
seed (:meth:`attngan_fast.sampling.Generator.draw_noise`, caption-major rows as in ``generate``).
G runs in eval mode (BatchNorm running statistics), so rows do not interact, but the arithmetic
of a row still depends on the shapes around it (the LSTM's packed steps, GEMM kernels picked by
batch size, the softmax width): each caption is therefore encoded alone, and with
``ServeOptions.pad_batch`` (the default) every G forward has the same shape, so a request's
images are bitwise the same whatever it is batched with (they equal ``Generator.generate`` up to
float rounding). ``GAN.MASK_MODE: original`` (docs/original_attngan.md §4.3) mixes attention masks
across the batch: there every request runs in forwards of its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..data.text import tokenize
from ..sampling import Generator
from .options import ServeOptions

__all__ = ["FieldError", "Job", "JobResult", "Engine"]


class FieldError(ValueError):
    """A request field is invalid. loc: its path, e.g. ("body", "captions", 0)."""

    def __init__(self, loc: tuple, msg: str) -> None:
        super().__init__(msg)
        self.loc, self.msg = loc, msg


@dataclass
class Job:
    """One request: captions[k] as word ids, ``num`` copies each (rows caption-major), and its noise
    (rows, Z_DIM) / (rows, CONDITION_DIM) on the device."""

    texts: list[str]
    ids: list[list[int]]
    words: list[list[str]]
    unknown: list[list[str]]
    num: int
    seed: int
    noise: Tensor
    eps: Tensor

    @property
    def rows(self) -> int:
        return len(self.ids) * self.num

    @property
    def width(self) -> int:
        return max(len(i) for i in self.ids)


@dataclass
class JobResult:
    """A job's images per stage [(rows, 3, S, S)] and attention per attention stage
    [(rows, job.width, h, w)] (CPU float32), and the size of the forward it ran in."""

    images: list[Tensor]
    attention: list[Tensor]
    batch_rows: int
    batch_jobs: int


class Engine:
    """Prepares jobs from captions and runs groups of them through ``generator``."""

    def __init__(self, generator: Generator, options: ServeOptions) -> None:
        self.generator, self.options = generator, options
        self.mergeable = generator.cfg.GAN.MASK_MODE != "original"
        word = next(w for i, w in sorted(generator.vocab.ixtoword.items()) if i != 0)
        probe = self.run([self.prepare([word], 1, 0)])[0]  # warm-up; tells the stage sizes
        self.stage_sizes = [int(im.size(-1)) for im in probe.images]
        self.attention_sizes = [int(a.size(-1)) for a in probe.attention]

    def example_caption(self) -> str:
        """options.example_caption, else a birds sentence if the vocabulary knows some of it, else
        its first words."""
        if self.options.example_caption:
            return self.options.example_caption
        birds = "this bird has a red belly and black wings with white spots"
        if self.generator.vocab.encode(birds, on_unknown="skip")[0]:
            return birds
        words = [w for i, w in sorted(self.generator.vocab.ixtoword.items()) if i != 0]
        return " ".join(words[:6])

    def info(self) -> dict[str, Any]:
        """What a client needs to know: stages, vocabulary size, limits, batching settings."""
        cfg, o = self.generator.cfg, self.options
        return {
            "generator": type(self.generator.netG).__name__,
            "stages": [{"stage": k, "size": s} for k, s in enumerate(self.stage_sizes)],
            "attention_stages": [{"stage": k + 1, "size": s} for k, s in enumerate(self.attention_sizes)],
            "vocabulary_size": self.generator.vocab.n_words,
            "z_dim": cfg.GAN.Z_DIM,
            "mask_mode": cfg.GAN.MASK_MODE,
            "device": str(self.generator.device),
            "example_caption": self.example_caption(),
            "limits": {"max_captions": o.max_captions, "max_num": o.max_num, "max_words": o.max_words,
                       "max_caption_chars": o.max_caption_chars, "max_body_bytes": o.max_body_bytes},
            "batching": {"max_batch": o.max_batch, "max_wait_ms": o.max_wait_ms, "queue_size": o.queue_size,
                         "timeout_s": o.timeout_s, "pad_batch": o.pad_batch, "across_requests": self.mergeable},
        }

    def prepare(self, texts: Sequence[str], num: int, seed: int, locs: Optional[Sequence[tuple]] = None) -> Job:
        """A job for ``texts``: tokenised as in training, unknown words dropped and reported.
        Raises :class:`FieldError` at ``locs[k]`` (default ``("body", "captions", k)``) for a
        caption without words, with more than ``max_words`` words, or with only unknown words."""
        ids, words, unknown = [], [], []
        for k, text in enumerate(texts):
            loc = locs[k] if locs is not None else ("body", "captions", k)
            tokens = tokenize(text)
            if not tokens:
                raise FieldError(loc, "the caption has no word")
            if len(tokens) > self.options.max_words:
                raise FieldError(loc, f"{len(tokens)} words, at most {self.options.max_words} allowed")
            known, missing = self.generator.vocab.encode(tokens, on_unknown="skip")
            if not known:
                raise FieldError(loc, f"no word of the caption is in the vocabulary (unknown: {', '.join(missing)})")
            ids.append(known)
            words.append([self.generator.vocab.ixtoword[i] for i in known])
            unknown.append(missing)
        noise, eps = self.generator.draw_noise(len(ids) * num, seed)
        return Job(list(texts), ids, words, unknown, num, seed, noise, eps)

    @torch.no_grad()
    def _encode(self, ids: list[int], width: int) -> tuple[Tensor, Tensor, Tensor]:
        """One caption encoded alone: words (1, E, width) zero-padded, sent (1, E), mask (1, width)."""
        device = self.generator.device
        words, sent = self.generator.text_encoder(torch.tensor([ids], device=device), torch.tensor([len(ids)]))
        mask = torch.ones(1, width, dtype=torch.bool, device=device)
        mask[0, : len(ids)] = False
        return F.pad(words, (0, width - words.size(2))), sent, mask

    @torch.no_grad()
    def run(self, jobs: list[Job]) -> list[JobResult]:
        """The jobs' rows concatenated, through G in forwards of ``max_batch`` rows, split back.

        Each caption is encoded alone (the LSTM's arithmetic depends on the batch). With
        ``pad_batch`` every forward has exactly ``max_batch`` rows (the last row repeated) and
        ``max_words`` word slots, so a row's arithmetic does not depend on the rest of the forward.
        """
        o = self.options
        width = o.max_words if o.pad_batch else max(job.width for job in jobs)
        encoded = [self._encode(ids, width) for job in jobs for ids in job.ids]
        counts = torch.tensor([job.num for job in jobs for _ in job.ids], device=self.generator.device)
        words, sent, mask = (torch.cat([e[i] for e in encoded]).repeat_interleave(counts, dim=0) for i in range(3))
        noise, eps = torch.cat([j.noise for j in jobs]), torch.cat([j.eps for j in jobs])
        n = noise.size(0)
        images: list[list[Tensor]] = []
        attention: list[list[Tensor]] = []
        for start in range(0, n, o.max_batch):
            stop = min(start + o.max_batch, n)
            rows = torch.arange(start, start + o.max_batch if o.pad_batch else stop, device=noise.device).clamp(max=n - 1)
            fakes, atts, _, _ = self.generator.netG(noise[rows], sent[rows], words[rows], mask[rows], eps[rows])
            images.append([f[: stop - start].float().cpu() for f in fakes])
            attention.append([a[: stop - start].float().cpu() for a in atts])
        stage_images = [torch.cat([c[s] for c in images]) for s in range(len(images[0]))]
        stage_attention = [torch.cat([c[s] for c in attention]) for s in range(len(attention[0]))]
        results, start = [], 0
        for job in jobs:
            part = slice(start, start + job.rows)
            results.append(JobResult([im[part] for im in stage_images], [a[part, : job.width] for a in stage_attention],
                                     n, len(jobs)))
            start += job.rows
        return results
