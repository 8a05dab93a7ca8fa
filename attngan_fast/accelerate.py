"""Drop-in acceleration of AttnGAN models built by other code bases (e.g. the original AttnGAN).

``accelerate(model)`` walks the module tree and swaps, in place, the submodules it recognises by
structure and behaviour for attngan_fast's classes, around the *same* child modules: parameters,
buffers, state_dict keys and values are unchanged, and only the ``forward`` differs (the fused ops
with the "fast" backend). Recognised:

- a GLU: a parameter-free module of class name ``GLU`` computing ``F.glu(x, 1)`` (checked on a probe);
- upBlock: an ``nn.Sequential`` of [nearest 2x Upsample, conv3x3 (stride 1, pad 1, no bias),
  affine BatchNorm2d, GLU];
- Block3x3_relu: an ``nn.Sequential`` of [conv3x3, BatchNorm2d, GLU];
- ResBlock: a module whose only child is ``block`` = [conv3x3 C->2C, BN, GLU, conv3x3 C->C, BN]
  and whose output is ``block(x) + x`` (checked on a probe);
- the discriminator blocks: an ``nn.Sequential`` of [conv 4x4 s2 p1 (no bias), affine BatchNorm2d,
  LeakyReLU] (downBlock), [conv3x3, BatchNorm2d, LeakyReLU] (Block3x3_leakRelu), or the four
  stride-2 convs of encode_image_by_16times (the first without BatchNorm);
- G's last layer GET_IMAGE_G: a module whose only child is ``img`` = [conv3x3 (no bias), Tanh],
  giving ``img(h)`` (checked on a probe);
- the discriminator head D_GET_LOGITS: a module with children ``outlogits`` (and ``jointConv``),
  attributes ``df_dim``, ``ef_dim``, ``bcondition``, giving what ours gives (checked on a probe);
- word-context attention: a module with children ``conv_context`` (1x1 conv, no bias) and ``sm``
  (Softmax) and an ``applyMask`` method, giving what the original GlobalAttentionGeneral gives
  (checked on a probe).

A module with hooks, or one that looks like a known block but fails a check, is left alone and
listed in the report's ``skipped``. ``accelerate_losses(cfg)`` gives the fused DAMSM
``words_loss`` / ``sent_loss`` with the original signatures.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .backend import backend
from .losses import fused
from .models.attention import MASK_MODES, GlobalAttentionGeneral
from .models.blocks import (
    GLU,
    Block3x3LeakRelu,
    Block3x3Relu,
    DownBlock,
    ImageEncoder16,
    ResBlock,
    UpBlock,
    fusable_conv_bn,
    is_nearest_2x,
    leaky_conv_groups,
)
from .models.discriminator import D_GET_LOGITS
from .models.generator import GET_IMAGE_G, is_img_conv_tanh

__all__ = ["AccelerationReport", "DamsmLosses", "accelerate", "accelerate_losses"]


@dataclass
class AccelerationReport:
    """What :func:`accelerate` did: ``swapped`` (qualified name, old class, new class) and
    ``skipped`` (qualified name, reason) for modules that looked like a known block but were kept."""

    swapped: list[tuple[str, str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    mask_mode: str = "original"

    def counts(self) -> dict[str, int]:
        """Number of swaps per new class name."""
        out: dict[str, int] = {}
        for _, _, new in self.swapped:
            out[new] = out.get(new, 0) + 1
        return out

    def __str__(self) -> str:
        parts = ", ".join(f"{n} x {kind}" for kind, n in sorted(self.counts().items())) or "nothing"
        lines = [f"accelerate: swapped {parts}"]
        if self.counts().get("GlobalAttentionGeneral") and self.mask_mode == "original":
            lines.append("  attention keeps the original masking (mask_mode='original', reference attention); "
                         "mask_mode='per_sample' runs the fused attention op")
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)


def _probe(shape: tuple[int, ...], like: Optional[Tensor] = None) -> Tensor:
    """A fixed random tensor (own generator: the global RNG is untouched) on ``like``'s device/dtype."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return x.to(like) if like is not None else x.float()


def _has_hooks(m: nn.Module) -> bool:
    return bool(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)


def _close(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)


def _is_glu(m: nn.Module) -> bool:
    """A parameter-free module named GLU whose output is F.glu(x, 1) on a probe."""
    if isinstance(m, GLU):
        return True
    if type(m).__name__ != "GLU" or any(True for _ in m.parameters()) or any(True for _ in m.children()):
        return False
    x = _probe((2, 6, 3))
    try:
        with torch.no_grad():
            return _close(m(x), F.glu(x, 1))
    except Exception:  # a module we do not understand: leave it alone
        return False


def _conv3x3(m: nn.Module, c_in: int, c_out: int) -> bool:
    return isinstance(m, nn.Conv2d) and m.in_channels == c_in and m.out_channels == c_out


def _match_up_block(m: nn.Module) -> Optional[Callable[[], nn.Module]]:
    if type(m) is not nn.Sequential or len(m) != 4:
        return None
    if is_nearest_2x(m[0]) and fusable_conv_bn(m[1], m[2]) and m[1].out_channels % 2 == 0 and _is_glu(m[3]):
        return lambda: UpBlock.from_modules(m[0], m[1], m[2], GLU())
    return None


def _match_block3x3_relu(m: nn.Module) -> Optional[Callable[[], nn.Module]]:
    if type(m) is not nn.Sequential or len(m) != 3:
        return None
    if fusable_conv_bn(m[0], m[1]) and m[0].out_channels % 2 == 0 and _is_glu(m[2]):
        return lambda: Block3x3Relu.from_modules(m[0], m[1], GLU())
    return None


def _res_body(block: nn.Module) -> bool:
    if type(block) is not nn.Sequential or len(block) != 5:
        return False
    c = getattr(block[3], "in_channels", -1)
    return (fusable_conv_bn(block[0], block[1]) and _conv3x3(block[0], c, 2 * c) and _is_glu(block[2])
            and fusable_conv_bn(block[3], block[4]) and _conv3x3(block[3], c, c))


def _match_res_block(m: nn.Module) -> Optional[Callable[[], nn.Module]]:
    if isinstance(m, ResBlock) or [n for n, _ in m.named_children()] != ["block"] or not _res_body(m.block):
        return None
    if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
        raise _Skip("has parameters or buffers of its own")
    probe_model = copy.deepcopy(m).eval()
    weight = m.block[0].weight
    x = _probe((1, m.block[3].in_channels, 4, 4), weight)
    with torch.no_grad(), backend("reference"):
        if not _close(probe_model(x), probe_model.block(x) + x):
            raise _Skip("output is not block(x) + x")
    block = m.block
    return lambda: ResBlock.from_block(nn.Sequential(block[0], block[1], GLU(), block[3], block[4]))


def _match_down_blocks(m: nn.Module) -> Optional[Callable[[], nn.Module]]:
    """downBlock, Block3x3_leakRelu or encode_image_by_16times, by their [conv, BN, LeakyReLU] runs."""
    if type(m) is not nn.Sequential:
        return None
    groups = leaky_conv_groups(m)
    if groups is None:
        return None
    layout = tuple(((conv.kernel_size[0], conv.stride[0], conv.padding[0]), bn is not None) for conv, bn, _ in groups)
    down, three = (4, 2, 1), (3, 1, 1)
    cls = {((down, True),): DownBlock, ((three, True),): Block3x3LeakRelu,
           ((down, False), (down, True), (down, True), (down, True)): ImageEncoder16}.get(layout)
    return None if cls is None else (lambda: cls.from_modules(*m))


def _match_d_head(m: nn.Module) -> Optional[Callable[[], nn.Module]]:
    names = sorted(n for n, _ in m.named_children())
    if isinstance(m, D_GET_LOGITS) or names not in (["outlogits"], ["jointConv", "outlogits"]):
        return None
    ndf, nef, cond = (getattr(m, a, None) for a in ("df_dim", "ef_dim", "bcondition"))
    if not (isinstance(ndf, int) and isinstance(nef, int) and cond == (names != ["outlogits"])):
        return None
    if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
        raise _Skip("has parameters or buffers of its own")
    new = D_GET_LOGITS.from_modules(ndf, nef, m.outlogits, getattr(m, "jointConv", None))
    like = next(m.parameters())
    h, c = _probe((2, 8 * ndf, 4, 4), like), _probe((2, nef), like)
    old_probe, new_probe = copy.deepcopy(m).eval(), copy.deepcopy(new).eval()
    try:
        with torch.no_grad(), backend("reference"):
            ok = _close(old_probe(h, c), new_probe(h, c)) if cond else _close(old_probe(h), new_probe(h))
    except Exception as e:  # a different calling convention
        raise _Skip(f"probe call failed ({type(e).__name__})") from None
    if not ok:
        raise _Skip("output differs from D_GET_LOGITS'")
    return lambda: new


def _match_image_g(m: nn.Module) -> Optional[Callable[[], nn.Module]]:
    if isinstance(m, GET_IMAGE_G) or [n for n, _ in m.named_children()] != ["img"] or not is_img_conv_tanh(m.img):
        return None
    if any(True for _ in m.parameters(recurse=False)) or any(True for _ in m.buffers(recurse=False)):
        raise _Skip("has parameters or buffers of its own")
    x = _probe((1, m.img[0].in_channels, 3, 3), m.img[0].weight)
    try:
        with torch.no_grad(), backend("reference"):
            ok = _close(copy.deepcopy(m)(x), m.img(x))
    except Exception as e:  # a different calling convention
        raise _Skip(f"probe call failed ({type(e).__name__})") from None
    if not ok:
        raise _Skip("output is not img(h)")
    img = m.img
    return lambda: GET_IMAGE_G.from_modules(img[0].in_channels, img)


def _match_attention(m: nn.Module, mask_mode: str) -> Optional[Callable[[], nn.Module]]:
    if isinstance(m, GlobalAttentionGeneral) or sorted(n for n, _ in m.named_children()) != ["conv_context", "sm"]:
        return None
    conv, sm = m.conv_context, m.sm
    if not (isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1) and conv.bias is None
            and isinstance(sm, nn.Softmax) and callable(getattr(m, "applyMask", None))):
        return None
    new = GlobalAttentionGeneral.from_modules(conv, sm, "original")
    old_probe = copy.deepcopy(m)
    h = _probe((2, conv.out_channels, 3, 2), conv.weight)
    words = _probe((2, conv.in_channels, 5), conv.weight)
    mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2], device=conv.weight.device)
    try:
        with torch.no_grad(), backend("reference"):
            old_probe.applyMask(mask)
            new.applyMask(mask)
            ok = all(_close(a, b) for a, b in zip(old_probe(h, words), new(h, words)))
    except Exception as e:  # a different calling convention: not the original attention
        raise _Skip(f"probe call failed ({type(e).__name__})") from None
    if not ok:
        raise _Skip("output differs from GlobalAttentionGeneral's")
    new.mask_mode = mask_mode
    new.mask = getattr(m, "mask", None)
    return lambda: new


class _Skip(Exception):
    """A module that looks like a known block but fails a check (the message says which)."""


def accelerate(model: nn.Module, mask_mode: str = "original") -> tuple[nn.Module, AccelerationReport]:
    """Swap, in place, the recognised submodules of ``model`` for fast equivalents (shared weights).

    mask_mode: for the word attention, "original" (default) keeps the original's masking and its
    results exactly (reference attention); "per_sample" masks each caption's own padding and runs
    the fused attention op (equal to "original" when B == 1 or all captions have the same length).
    Returns the model (a new object only when ``model`` itself was swapped) and the report.
    The fused ops run while ``attngan_fast.get_backend() == "fast"`` (the default).
    """
    if mask_mode not in MASK_MODES:
        raise ValueError(f"mask_mode: expected one of {MASK_MODES}, got {mask_mode!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    report = AccelerationReport(mask_mode=mask_mode)
    # id(old) -> (old, new): a module shared by two parents stays shared (old kept alive: ids unique)
    done: dict[int, tuple[nn.Module, nn.Module]] = {}

    def convert(name: str, m: nn.Module) -> nn.Module:
        if id(m) in done:
            return done[id(m)][1]
        new = m
        try:
            build = (_match_up_block(m) or _match_block3x3_relu(m) or _match_res_block(m)
                     or _match_down_blocks(m) or _match_d_head(m) or _match_image_g(m)
                     or _match_attention(m, mask_mode))
            if build is None and not isinstance(m, GLU) and _is_glu(m):
                build = GLU
            if build is not None and _has_hooks(m):
                raise _Skip("has hooks (a fused forward would not call them)")
        except _Skip as why:
            build = None
            report.skipped.append((name or "<model>", str(why)))
        if build is not None:
            new = build()
            new.train(m.training)
            report.swapped.append((name or "<model>", type(m).__name__, type(new).__name__))
        for child_name, child in list(new._modules.items()):  # all names, a shared child under each
            if child is None:
                continue
            replacement = convert(f"{name}.{child_name}" if name else child_name, child)
            if replacement is not child:
                setattr(new, child_name, replacement)
        done[id(m)] = (m, new)
        return new

    return convert("", model), report


class DamsmLosses(NamedTuple):
    """The fused DAMSM losses with the original signatures (cfg's GAMMA1-3 bound)."""

    words_loss: Callable[..., tuple[Optional[Tensor], Optional[Tensor], list[Tensor]]]
    sent_loss: Callable[..., tuple[Optional[Tensor], Optional[Tensor]]]


def accelerate_losses(cfg: Any) -> DamsmLosses:
    """Fused ``words_loss(img_features, words_emb, labels, cap_lens, class_ids, batch_size)`` and
    ``sent_loss(cnn_code, rnn_code, labels, class_ids, batch_size, eps=1e-8)``, as the original's.

    cfg: anything with ``TRAIN.SMOOTH.GAMMA1/2/3`` (an attngan_fast Config or the original's
    EasyDict). Values and gradients equal the reference losses; no per-caption loop, no host sync
    except for the att maps' lengths.
    """
    smooth = cfg.TRAIN.SMOOTH
    for key in ("GAMMA1", "GAMMA2", "GAMMA3"):
        if not isinstance(getattr(smooth, key, None), (int, float)):
            raise ValueError(f"cfg.TRAIN.SMOOTH.{key}: expected a number, got {getattr(smooth, key, None)!r}")

    def words_loss(img_features: Tensor, words_emb: Tensor, labels: Optional[Tensor], cap_lens: Any,
                   class_ids: Any, batch_size: int) -> tuple[Optional[Tensor], Optional[Tensor], list[Tensor]]:
        return fused.words_loss(img_features, words_emb, labels, cap_lens, class_ids, batch_size, cfg)

    def sent_loss(cnn_code: Tensor, rnn_code: Tensor, labels: Optional[Tensor], class_ids: Any, batch_size: int,
                  eps: float = 1e-8) -> tuple[Optional[Tensor], Optional[Tensor]]:
        return fused.sent_loss(cnn_code, rnn_code, labels, class_ids, batch_size, cfg, eps)

    return DamsmLosses(words_loss, sent_loss)
