"""Sampling: text -> images with a trained generator (docs/original_attngan.md §7.3).

>>> gen = Generator.from_checkpoint("out/checkpoint_epoch_30.pt")                  # doctest: +SKIP
>>> result = gen.generate(["a bird with blue wings and a red belly"], seed=0, num=4)  # doctest: +SKIP
>>> result.images[-1].shape                                                          # doctest: +SKIP
torch.Size([4, 3, 128, 128])

Original AttnGAN files work too: ``Generator.from_checkpoint(netG="netG_epoch_600.pth",
text_encoder="text_encoder200.pth", captions="captions.pickle", cfg="eval_bird")``.

Captions are tokenised as in training (:func:`attngan_fast.data.tokenize`) and mapped with the
training vocabulary; unknown words are dropped and reported (``on_unknown="skip"``, the original
``gen_example`` behaviour) or raise (``"error"``). As in ``gen_example``, captions are not cut to
``TEXT.WORDS_NUM``. G runs in eval mode (BatchNorm running statistics); the noise ``z`` and the
CA noise of caption i, copy j come from a generator seeded with ``seed``, drawn in caption-major
order, so an image does not depend on the batch size (except with ``GAN.MASK_MODE: original``,
whose mask mixing depends on the batch, as the original).

Many images: :meth:`Generator.generate_to` writes each batch's PNGs and attention pictures as it
goes (memory bounded by one batch, plus the noise of all N rows: N x (Z_DIM + CONDITION_DIM)
floats, drawn up front so that an image does not depend on the batch size).
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Literal, Optional, Sequence, Union

import torch
import torch.nn as nn
from PIL import Image
from torch import Tensor
from tqdm.auto import tqdm

from .checkpoint import load_snapshot
from .config import Config, from_dict, load
from .data.text import Vocabulary, load_captions_pickle
from .io import FileFormatError, atomic_open, describe, load_state_dict_file
from .models import G_DCGAN, G_NET, RNN_ENCODER
from .visualize import attention_figure, to_pil

__all__ = ["Generation", "GenerationFiles", "Generator", "damsm_attention"]

PathLike = Union[str, os.PathLike]


@dataclass
class Generation:
    """Generated images of N rows: ``num`` per caption, caption-major (row i * num + j).

    texts: the caption of each row; words: the words kept (known to the vocabulary) per row;
    unknown: the words dropped per row; images: one (N, 3, S, S) tensor in [-1, 1] per stage (CPU);
    attention: one (N, T, h, w) tensor per attention stage (T = longest caption; rows beyond a
    caption's length are 0); attention_labels: their names in the pictures (default "stage k");
    captions: the word ids (N, T) fed to the text encoder (0-padded).
    """

    texts: list[str]
    words: list[list[str]]
    unknown: list[list[str]]
    images: list[Tensor]
    attention: list[Tensor] = field(default_factory=list)
    num: int = 1
    attention_labels: Optional[list[str]] = None
    captions: Optional[Tensor] = None

    def pil(self, stage: int = -1) -> list[Image.Image]:
        """The images of ``stage`` (default the last) as PIL images, one per row."""
        return [to_pil(img) for img in self.images[stage]]

    def attention_figure(self, row: int, cell_size: int = 128) -> Image.Image:
        """The paper's attention picture of ``row`` (see :func:`attngan_fast.visualize.attention_figure`)."""
        return attention_figure([im[row] for im in self.images], [a[row] for a in self.attention],
                                self.words[row], cell_size, self.attention_labels)

    def save(self, out_dir: PathLike, prefix: str = "") -> list[Path]:
        """Write ``{i:03d}_{j}_g{stage}.png`` per row and stage and ``{i:03d}_{j}_attention.png``
        (i: caption, j: copy) plus ``captions.txt`` to ``out_dir``; returns the image paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths, lines = self.write_rows(out, prefix)
        (out / f"{prefix}captions.txt").write_text("".join(lines), encoding="utf-8")
        return paths

    def write_rows(self, out: Path, prefix: str = "", first_row: int = 0) -> tuple[list[Path], list[str]]:
        """The images of :meth:`save` without ``captions.txt``, for rows numbered from ``first_row``
        (a batch of a longer run); returns the paths and the ``captions.txt`` lines."""
        paths, lines = [], []
        for row, text in enumerate(self.texts):
            i, j = divmod(first_row + row, self.num)
            stem = f"{prefix}{i:03d}_{j}"
            for stage, images in enumerate(self.images):
                paths.append(out / f"{stem}_g{stage}.png")
                to_pil(images[row]).save(paths[-1])
            paths.append(out / f"{stem}_attention.png")
            self.attention_figure(row).save(paths[-1])
            lines.append(f"{stem}\t{text}\t{' '.join(self.words[row])}\n")
        return paths, lines


@dataclass
class GenerationFiles:
    """What :meth:`Generator.generate_to` wrote: ``files`` images (PNG per row and stage plus one
    attention picture per row) and ``captions.txt`` in ``out_dir``; texts and unknown per caption."""

    out_dir: Path
    files: int
    texts: list[str]
    unknown: list[list[str]]
    num: int


class Generator:
    """A generator, its text encoder and vocabulary, ready to draw images from captions.

    netG: G_NET or G_DCGAN; text_encoder: RNN_ENCODER (its vocabulary size must match ``vocab``).
    Both are put in eval mode on ``device``.
    """

    def __init__(self, netG: nn.Module, text_encoder: nn.Module, vocab: Vocabulary, cfg: Config,
                 device: Union[str, torch.device] = "cpu") -> None:
        ntoken = text_encoder.encoder.weight.shape[0]
        if ntoken != vocab.n_words:
            raise ValueError(f"the text encoder has a vocabulary of {ntoken} words, the captions file "
                             f"{vocab.n_words}: use the captions.pickle the encoder was trained with")
        self.device = torch.device(device)
        self.cfg = cfg
        self.vocab = vocab
        self.netG = netG.to(self.device).eval().requires_grad_(False)
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls,
        checkpoint: Optional[PathLike] = None,
        *,
        netG: Optional[PathLike] = None,
        text_encoder: Optional[PathLike] = None,
        captions: Optional[PathLike] = None,
        cfg: Union[Config, PathLike, None] = None,
        device: Union[str, torch.device] = "cpu",
        mask_mode: Optional[str] = None,
        weights: Literal["ema", "current"] = "ema",
    ) -> "Generator":
        """From a training snapshot (``checkpoint``: everything inside; ``weights`` picks the EMA or
        the current G), or from original files: ``netG`` (a G state_dict such as
        ``netG_epoch_600.pth``), ``text_encoder`` (``text_encoder200.pth``), ``captions``
        (``captions.pickle``) and ``cfg`` (a config or its name/path, e.g. ``"eval_bird"``).
        mask_mode: override ``GAN.MASK_MODE`` ("original" reproduces the released checkpoints).
        """
        if checkpoint is not None:
            if weights not in ("ema", "current"):
                raise ValueError(f"weights: expected 'ema' or 'current', got {weights!r}")
            snap = load_snapshot(checkpoint)
            config = from_dict(snap["config"]) if cfg is None else _config(cfg)
            words = snap["ixtoword"]
            vocab = Vocabulary({i: w for i, w in enumerate(words)}, {w: i for i, w in enumerate(words)})
            g_state = snap["netG_ema" if weights == "ema" else "netG"]
            e_state = snap["text_encoder"]
        else:
            missing = [n for n, v in (("netG", netG), ("text_encoder", text_encoder), ("captions", captions),
                                      ("cfg", cfg)) if v is None]
            if missing:
                raise ValueError(f"give a training snapshot, or all of netG, text_encoder, captions and cfg "
                                 f"(missing: {', '.join(missing)})")
            config = _config(cfg)
            vocab = load_captions_pickle(captions).vocab
            g_state = _strip_module(load_state_dict_file(netG, "a state_dict of G_NET (netG_epoch_*.pth)"))
            expected = "a state_dict of RNN_ENCODER (text_encoder*.pth)"
            e_state = _strip_module(load_state_dict_file(text_encoder, expected))
            if "encoder.weight" not in e_state:
                raise FileFormatError(f"{text_encoder}: expected {expected}, found {describe(e_state)}")
        if mask_mode is not None:
            config = config.replace(**{"GAN.MASK_MODE": mask_mode})
        generator = G_DCGAN(config) if config.GAN.B_DCGAN else G_NET(config)
        try:
            generator.load_state_dict(g_state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{checkpoint or netG}: the generator does not match the config "
                             f"(GF_DIM={config.GAN.GF_DIM}, BRANCH_NUM={config.TREE.BRANCH_NUM}, "
                             f"R_NUM={config.GAN.R_NUM}, EMBEDDING_DIM={config.TEXT.EMBEDDING_DIM}): {e}") from None
        encoder = _text_encoder_for(e_state, config)
        return cls(generator, encoder, vocab, config, device)

    # ------------------------------------------------------------------ drawing
    def draw_noise(self, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """The noise z (n, Z_DIM) and CA noise eps (n, CONDITION_DIM) of ``n`` rows, drawn in that
        order on the device from a generator seeded with ``seed`` (as :meth:`generate_ids` does)."""
        gen = torch.Generator(self.device).manual_seed(seed)
        noise = torch.randn(n, self.cfg.GAN.Z_DIM, generator=gen, device=self.device)
        return noise, torch.randn(n, self.cfg.GAN.CONDITION_DIM, generator=gen, device=self.device)

    @torch.no_grad()
    def generate_ids(
        self, captions: Tensor, cap_lens: Tensor, seed: int = 0, batch_size: int = 32, progress: bool = False
    ) -> tuple[list[Tensor], list[Tensor]]:
        """Images of word-id captions (N, L) int64 with lengths (N,), in batches of ``batch_size``
        (a progress bar over the batches with ``progress``).

        Returns images per stage [(N, 3, S, S)] and attention per attention stage [(N, T, h, w)]
        with T = max(cap_lens) (CPU tensors).
        """
        images: list[list[Tensor]] = []
        attention: list[list[Tensor]] = []
        for _, fakes, atts in self._batches(captions, cap_lens, seed, batch_size, progress):
            images.append(fakes)
            attention.append(atts)
        return ([torch.cat([b[s] for b in images]) for s in range(len(images[0]))],
                [torch.cat([b[s] for b in attention]) for s in range(len(attention[0]))])

    def _batches(self, captions: Tensor, cap_lens: Tensor, seed: int, batch_size: int,
                 progress: bool) -> Iterator[tuple[int, list[Tensor], list[Tensor]]]:
        """(first row, images per stage, attention per stage padded to T = max(cap_lens)) per batch."""
        n = captions.size(0)
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        if cap_lens.shape != (n,) or n == 0 or int(cap_lens.min()) < 1:
            raise ValueError(f"captions (N, L) and cap_lens (N,) with lengths >= 1 expected, got "
                             f"{tuple(captions.shape)} and {tuple(cap_lens.shape)}")
        noise, eps = self.draw_noise(n, seed)
        width = int(cap_lens.max())
        with tqdm(total=n, desc="generating", unit="img", disable=not progress, dynamic_ncols=True,
                  leave=False) as bar:
            for start in range(0, n, batch_size):
                rows = slice(start, start + batch_size)
                lens = cap_lens[rows].cpu()
                caps = captions[rows, : int(lens.max())].to(self.device)
                words_embs, sent_emb = self.text_encoder(caps, lens)
                mask = (caps == 0)[:, : words_embs.size(2)]
                fakes, atts, _, _ = self.netG(noise[rows], sent_emb, words_embs, mask, eps[rows])
                batch = (start, [f.float().cpu() for f in fakes],
                         [torch.nn.functional.pad(a.float().cpu(), (0, 0, 0, 0, 0, width - a.size(1))) for a in atts])
                del fakes, atts
                yield batch
                del batch  # a streaming consumer frees the images before the next batch is drawn
                bar.update(len(lens))

    def generate(
        self,
        texts: Union[str, Sequence[str]],
        seed: int = 0,
        num: int = 1,
        batch_size: int = 32,
        on_unknown: Literal["skip", "error"] = "skip",
        output: Literal["tensor", "pil"] = "tensor",
        progress: bool = False,
    ) -> Union[Generation, list[Image.Image]]:
        """``num`` images per caption. output "tensor": a :class:`Generation`; "pil": the last
        stage's images as PIL images (caption-major). Unknown words: see the module docstring.
        Every image is kept in memory: for many, see :meth:`generate_to`."""
        texts, words, unknown, captions, lens = self._encode(texts, num, on_unknown)
        images, attention = self.generate_ids(captions, lens, seed=seed, batch_size=batch_size, progress=progress)
        if output == "pil":
            return [to_pil(img) for img in images[-1]]
        return Generation(texts, words, unknown, images, attention, num, captions=captions)

    def generate_to(
        self,
        out_dir: PathLike,
        texts: Union[str, Sequence[str]],
        seed: int = 0,
        num: int = 1,
        batch_size: int = 32,
        on_unknown: Literal["skip", "error"] = "skip",
        progress: bool = False,
        prefix: str = "",
    ) -> GenerationFiles:
        """The files of :meth:`Generation.save` for ``generate(texts, seed, num, ...)`` (the same
        images), written batch by batch: at most one batch of images is in memory.
        ``captions.txt`` is written (atomically) at the end."""
        texts, words, unknown, captions, lens = self._encode(texts, num, on_unknown)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = 0
        with atomic_open(out / f"{prefix}captions.txt", "w") as listing:
            for start, fakes, atts in self._batches(captions, lens, seed, batch_size, progress):
                rows = slice(start, start + fakes[0].size(0))
                batch = Generation(texts[rows], words[rows], unknown[rows], fakes, atts, num)
                paths, lines = batch.write_rows(out, prefix, first_row=start)
                listing.writelines(lines)
                files += len(paths)
                del fakes, atts, batch
        return GenerationFiles(out, files, texts[::num], unknown[::num], num)

    def _encode(self, texts: Union[str, Sequence[str]], num: int, on_unknown: str
                ) -> tuple[list[str], list[list[str]], list[list[str]], Tensor, Tensor]:
        """Per row (``num`` per caption, caption-major): text, known words, unknown words; and the
        0-padded word ids (N, T) and lengths (N,)."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts or num < 1:
            raise ValueError(f"expected at least one caption and num >= 1, got {len(texts)} captions, num={num}")
        encoded, unknown = [], []
        for text in texts:
            ids, missing = self.vocab.encode(text, on_unknown=on_unknown)
            if missing:
                warnings.warn(f"caption {text!r}: unknown word(s) {missing} dropped", stacklevel=3)
            if not ids:
                raise ValueError(f"caption {text!r}: no word of it is in the training vocabulary")
            encoded.append(ids)
            unknown.append(missing)
        rows = [k for k in range(len(texts)) for _ in range(num)]
        width = max(len(ids) for ids in encoded)
        captions = torch.zeros(len(rows), width, dtype=torch.int64)
        lens = torch.tensor([len(encoded[k]) for k in rows])
        for r, k in enumerate(rows):
            captions[r, : len(encoded[k])] = torch.tensor(encoded[k])
        return ([texts[k] for k in rows], [[self.vocab.ixtoword[i] for i in encoded[k]] for k in rows],
                [unknown[k] for k in rows], captions, lens)


@torch.no_grad()
def damsm_attention(result: Generation, text_encoder: nn.Module, image_encoder: nn.Module, cfg: Config,
                    batch_size: int = 32) -> Tensor:
    """DAMSM's word attention over the final images of ``result``: (N, T, h, w) on the image
    encoder's region grid (``func_attention`` of each caption's words against its own image, as
    the original draws it in DAMSM pre-training). For a model without attention stages (one stage)
    this is the attention picture to draw.
    """
    from .losses import words_loss

    if result.captions is None:
        raise ValueError("result: no word ids (captions) recorded")
    device = next(image_encoder.parameters()).device
    lens = (result.captions != 0).sum(1)
    width = result.captions.size(1)
    maps = []
    for start in range(0, len(lens), batch_size):
        caps, n = result.captions[start:start + batch_size], lens[start:start + batch_size]
        regions, _ = image_encoder(result.images[-1][start:start + batch_size].to(device))
        words_emb, _ = text_encoder(caps[:, : int(n.max())].to(device), n)
        _, _, att = words_loss(regions, words_emb, None, n, None, len(n), cfg)
        maps += [torch.nn.functional.pad(a[0].float().cpu(), (0, 0, 0, 0, 0, width - a.size(1))) for a in att]
    return torch.stack(maps)


def _config(cfg: Union[Config, PathLike]) -> Config:
    return cfg if isinstance(cfg, Config) else load(cfg)


def _strip_module(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state_dict, without the ``module.`` prefix (DataParallel/DDP saves)."""
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}


def _text_encoder_for(state: dict[str, Tensor], cfg: Config) -> RNN_ENCODER:
    """An RNN_ENCODER shaped like ``state`` (vocabulary and word-vector sizes read from it)."""
    if "encoder.weight" not in state:
        raise ValueError("the text encoder state_dict has no 'encoder.weight' (not an RNN_ENCODER)")
    ntoken, ninput = state["encoder.weight"].shape
    encoder = RNN_ENCODER(ntoken, cfg, ninput=ninput, nhidden=cfg.TEXT.EMBEDDING_DIM)
    encoder.load_state_dict(state, strict=True)
    return encoder
