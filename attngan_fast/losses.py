"""AttnGAN / DAMSM losses (original ``code/miscc/losses.py``): the literal reference math.

These are the correctness oracle for the fast paths, so they keep the original's structure,
including the per-caption Python loop of :func:`words_loss`. Departures from the original:

* the configuration is an explicit ``cfg`` argument (gammas ``cfg.TRAIN.SMOOTH.GAMMA1/2/3``,
  lambda ``cfg.TRAIN.SMOOTH.LAMBDA``);
* class masks are built with torch on the inputs' device (``class_ids``: numpy array, list,
  tensor or None);
* :func:`generator_loss` takes its DAMSM terms from :func:`damsm_loss_terms`, which uses the
  fused losses of ``attngan_fast.damsm_losses`` when the backend is "fast" (these functions stay
  the literal reference and the oracle of the fused ones);
* batch size 1 works (the original's ``.squeeze()`` in :func:`sent_loss` broke it; values for
  B > 1 are unchanged), and :func:`discriminator_loss` drops the empty mismatched-pair term
  at B == 1 instead of returning NaN.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .backend import get_backend
from .models.blocks import check_shape
from .ops.damsm import cap_lens_list

__all__ = [
    "cosine_similarity",
    "func_attention",
    "sent_loss",
    "word_similarities",
    "words_loss",
    "damsm_loss_terms",
    "discriminator_loss",
    "generator_loss",
    "KL_loss",
]

if TYPE_CHECKING:
    import numpy as np

ClassIds = Optional[Union[Tensor, Sequence[int], "np.ndarray"]]


def _class_mask(class_ids: ClassIds, batch_size: int, device: torch.device) -> Optional[Tensor]:
    """(B, B) bool, True where captions j and i belong to the same class and j != i; or None."""
    if class_ids is None:
        return None
    ids = torch.as_tensor(class_ids).to(device, non_blocking=True)  # host data: no stream sync on CUDA
    check_shape("class_ids", ids, (batch_size,))
    mask = ids.unsqueeze(1) == ids.unsqueeze(0)
    mask.fill_diagonal_(False)
    return mask


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``sum(x1 * x2) / max(|x1| * |x2|, eps)`` along ``dim``, then ``.squeeze()``.

    The clamp is on the product of the norms (``F.cosine_similarity`` clamps each norm).
    """
    w12 = torch.sum(x1 * x2, dim)
    w1 = torch.norm(x1, 2, dim)
    w2 = torch.norm(x2, 2, dim)
    return (w12 / (w1 * w2).clamp(min=eps)).squeeze()


def func_attention(query: Tensor, context: Tensor, gamma1: float) -> tuple[Tensor, Tensor]:
    """DAMSM attention of each word over the image regions (paper Eq. 7-9).

    query: (B, D, n) words; context: (B, D, ih, iw) regions (S = ih * iw).
    Softmax over words for each region, then softmax over regions of gamma1 * those probabilities.

    Returns the region context per word (B, D, n) and the weights (B, n, ih, iw).
    """
    sizes: dict[str, int] = {}
    check_shape("query", query, ("B", "D", "n"), sizes)
    check_shape("context", context, ("B", "D", "ih", "iw"), sizes)
    batch_size, query_len = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    source_len = ih * iw

    context = context.reshape(batch_size, -1, source_len)  # (B, D, S)
    context_t = context.transpose(1, 2).contiguous()  # (B, S, D)
    attn = torch.bmm(context_t, query)  # (B, S, n), Eq. 7
    attn = F.softmax(attn.view(batch_size * source_len, query_len), dim=1)  # Eq. 8, over words
    attn = attn.view(batch_size, source_len, query_len).transpose(1, 2).contiguous()  # (B, n, S)
    attn = attn.view(batch_size * query_len, source_len) * gamma1
    attn = F.softmax(attn, dim=1).view(batch_size, query_len, source_len)  # Eq. 9, over regions
    attn_t = attn.transpose(1, 2).contiguous()  # (B, S, n)
    weighted_context = torch.bmm(context, attn_t)  # (B, D, n)
    return weighted_context, attn.view(batch_size, -1, ih, iw)


def check_sent_loss_inputs(cnn_code: Tensor, rnn_code: Tensor, labels: Optional[Tensor], batch_size: int) -> None:
    """ValueError naming the argument unless cnn_code and rnn_code are (B, D) and labels (B,) or None."""
    check_shape("cnn_code", cnn_code, (batch_size, "D"))
    check_shape("rnn_code", rnn_code, tuple(cnn_code.shape))
    if labels is not None:
        check_shape("labels", labels, (batch_size,))


def sent_loss(
    cnn_code: Tensor,
    rnn_code: Tensor,
    labels: Optional[Tensor],
    class_ids: ClassIds,
    batch_size: int,
    cfg: Any,
    eps: float = 1e-8,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Sentence-level DAMSM loss.

    cnn_code: (B, D) image codes (rows); rnn_code: (B, D) sentence codes (columns);
    labels: (B,) int64, normally ``arange(B)``, or None (then both losses are None).
    scores[i, j] = GAMMA3 * cos(cnn_i, rnn_j) with same-class off-diagonal entries at -inf.

    Returns CE(scores, labels), CE(scores^T, labels) (scalars, mean-reduced).
    """
    check_sent_loss_inputs(cnn_code, rnn_code, labels, batch_size)
    masks = _class_mask(class_ids, batch_size, cnn_code.device)

    cnn_code = cnn_code.unsqueeze(0)  # (1, B, D)
    rnn_code = rnn_code.unsqueeze(0)
    cnn_code_norm = torch.norm(cnn_code, 2, dim=2, keepdim=True)  # (1, B, 1)
    rnn_code_norm = torch.norm(rnn_code, 2, dim=2, keepdim=True)
    scores0 = torch.bmm(cnn_code, rnn_code.transpose(1, 2))  # (1, B, B)
    norm0 = torch.bmm(cnn_code_norm, rnn_code_norm.transpose(1, 2))
    scores0 = scores0 / norm0.clamp(min=eps) * cfg.TRAIN.SMOOTH.GAMMA3
    scores0 = scores0.squeeze(0)  # (B, B); the original's .squeeze() broke B == 1
    if masks is not None:
        scores0 = scores0.masked_fill(masks, float("-inf"))
    scores1 = scores0.transpose(0, 1)
    if labels is None:
        return None, None
    return nn.CrossEntropyLoss()(scores0, labels), nn.CrossEntropyLoss()(scores1, labels)


def word_similarities(
    img_features: Tensor,
    words_emb: Tensor,
    cap_lens: Sequence[int],
    gamma1: float,
    gamma2: float,
) -> tuple[Tensor, list[Tensor]]:
    """The per-caption loop of :func:`words_loss`: similarities before GAMMA3 and masking.

    img_features: (B, D, ih, iw); words_emb: (B, D, T); cap_lens: B Python ints in 1..T.
    Returns sim (B images, B captions), sim[j, i] = log sum_w exp(gamma2 * cos(e_w, c_w)) over
    caption i's words against image j, and the att maps [(1, cap_lens[i], ih, iw)] of image i
    with caption i.
    """
    batch_size = img_features.size(0)
    att_maps = []
    similarities = []
    for i in range(batch_size):
        words_num = cap_lens[i]
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous()  # (1, D, n)
        word = word.repeat(batch_size, 1, 1)  # (B, D, n)
        weighted_context, attn = func_attention(word, img_features, gamma1)
        att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous().view(batch_size * words_num, -1)  # (B*n, D)
        weighted_context = weighted_context.transpose(1, 2).contiguous().view(batch_size * words_num, -1)
        row_sim = cosine_similarity(word, weighted_context).view(batch_size, words_num)  # Eq. 10
        row_sim = torch.log(torch.exp(row_sim * gamma2).sum(dim=1, keepdim=True))  # (B, 1)
        similarities.append(row_sim)
    return torch.cat(similarities, 1), att_maps


def words_loss(
    img_features: Tensor,
    words_emb: Tensor,
    labels: Optional[Tensor],
    cap_lens: Union[Tensor, Sequence[int]],
    class_ids: ClassIds,
    batch_size: int,
    cfg: Any,
) -> tuple[Optional[Tensor], Optional[Tensor], list[Tensor]]:
    """Word-level DAMSM loss, one caption at a time (the original loop).

    img_features: (B, D, 17, 17) region features; words_emb: (B, D, T) word features with
    T >= max(cap_lens); labels: (B,) int64 or None (then both losses are None);
    cap_lens: (B,) caption lengths, each in 1..T; class_ids: (B,) or None.

    sim[j, i] = log sum_w exp(GAMMA2 * cos(e_w, c_w)) over caption i's words against image j
    (no 1/GAMMA2, no length normalisation), S = GAMMA3 * sim with same-class off-diagonal
    entries at -inf. Returns CE(S, labels), CE(S^T, labels) and the att maps
    [(1, cap_lens[i], 17, 17) for image i with caption i].
    """
    sizes: dict[str, int] = {}
    check_shape("img_features", img_features, (batch_size, "D", "H", "W"), sizes)
    check_shape("words_emb", words_emb, (batch_size, "D", "T"), sizes)
    lens = cap_lens_list(cap_lens)
    if len(lens) != batch_size:
        raise ValueError(f"cap_lens: expected ({batch_size},), got ({len(lens)},)")
    if labels is not None:
        check_shape("labels", labels, (batch_size,))
    masks = _class_mask(class_ids, batch_size, img_features.device)
    similarities, att_maps = word_similarities(
        img_features, words_emb, lens, cfg.TRAIN.SMOOTH.GAMMA1, cfg.TRAIN.SMOOTH.GAMMA2
    )
    similarities = similarities * cfg.TRAIN.SMOOTH.GAMMA3  # (B images, B captions)
    if masks is not None:
        similarities = similarities.masked_fill(masks, float("-inf"))
    similarities1 = similarities.transpose(0, 1)
    if labels is None:
        return None, None, att_maps
    loss0 = nn.CrossEntropyLoss()(similarities, labels)
    loss1 = nn.CrossEntropyLoss()(similarities1, labels)
    return loss0, loss1, att_maps


def damsm_loss_terms(
    region_features: Tensor,
    cnn_code: Tensor,
    words_emb: Tensor,
    sent_emb: Tensor,
    labels: Tensor,
    cap_lens: Union[Tensor, Sequence[int]],
    class_ids: ClassIds,
    cfg: Any,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four DAMSM terms ``(w_loss0, w_loss1, s_loss0, s_loss1)`` of a batch, unweighted.

    region_features: (B, E, 17, 17) and cnn_code: (B, E) from the image encoder; words_emb:
    (B, E, T) and sent_emb: (B, E) from the text encoder; labels: (B,) = arange(B).
    The backend switch for these losses: with backend "fast" the fused
    ``attngan_fast.damsm_losses.words_loss`` / ``sent_loss`` (no att maps, no host sync), else
    :func:`words_loss` / :func:`sent_loss` above. Used by :func:`generator_loss` and DAMSM training.
    """
    batch_size = region_features.size(0)
    if get_backend() == "fast":
        from . import damsm_losses  # imports this module: bind on use

        w_loss0, w_loss1, _ = damsm_losses.words_loss(
            region_features, words_emb, labels, cap_lens, class_ids, batch_size, cfg, return_att_maps=False
        )
        s_loss0, s_loss1 = damsm_losses.sent_loss(cnn_code, sent_emb, labels, class_ids, batch_size, cfg)
    else:
        w_loss0, w_loss1, _ = words_loss(region_features, words_emb, labels, cap_lens, class_ids, batch_size, cfg)
        s_loss0, s_loss1 = sent_loss(cnn_code, sent_emb, labels, class_ids, batch_size, cfg)
    return w_loss0, w_loss1, s_loss0, s_loss1


def discriminator_loss(
    netD: nn.Module,
    real_imgs: Tensor,
    fake_imgs: Tensor,
    conditions: Tensor,
    real_labels: Tensor,
    fake_labels: Tensor,
) -> Tensor:
    """BCE on the D probabilities; real and fake go through ``netD`` in separate calls.

    real_imgs, fake_imgs: (B, 3, S, S) (fake is detached); conditions: (B, E) sentence
    embeddings; real_labels, fake_labels: (B,) float (1s and 0s).
    Mismatched pairs: real image b with sentence b + 1. With ``UNCOND_DNET``:
    ``(real + cond_real) / 2 + (fake + cond_fake + cond_wrong) / 3``, else
    ``cond_real + (cond_fake + cond_wrong) / 2``. At B == 1 there is no mismatched pair and
    cond_wrong is 0.
    """
    sizes: dict[str, int] = {}
    check_shape("real_imgs", real_imgs, ("B", 3, "S", "S"), sizes)
    check_shape("fake_imgs", fake_imgs, tuple(real_imgs.shape))
    check_shape("conditions", conditions, ("B", "E"), sizes)
    check_shape("real_labels", real_labels, ("B",), sizes)
    check_shape("fake_labels", fake_labels, ("B",), sizes)
    bce = nn.BCELoss()
    real_features = netD(real_imgs)
    fake_features = netD(fake_imgs.detach())
    cond_real_errD = bce(netD.COND_DNET(real_features, conditions), real_labels)
    cond_fake_errD = bce(netD.COND_DNET(fake_features, conditions), fake_labels)
    batch_size = real_features.size(0)
    if batch_size > 1:
        cond_wrong_logits = netD.COND_DNET(real_features[: batch_size - 1], conditions[1:batch_size])
        cond_wrong_errD = bce(cond_wrong_logits, fake_labels[1:batch_size])
    else:
        cond_wrong_errD = real_features.new_zeros(())
    if netD.UNCOND_DNET is not None:
        real_errD = bce(netD.UNCOND_DNET(real_features), real_labels)
        fake_errD = bce(netD.UNCOND_DNET(fake_features), fake_labels)
        return (real_errD + cond_real_errD) / 2.0 + (fake_errD + cond_fake_errD + cond_wrong_errD) / 3.0
    return cond_real_errD + (cond_fake_errD + cond_wrong_errD) / 2.0


def generator_loss(
    netsD: Sequence[nn.Module],
    image_encoder: nn.Module,
    fake_imgs: Sequence[Tensor],
    real_labels: Tensor,
    words_embs: Tensor,
    sent_emb: Tensor,
    match_labels: Tensor,
    cap_lens: Union[Tensor, Sequence[int]],
    class_ids: ClassIds,
    cfg: Any,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Adversarial terms of every stage plus LAMBDA-weighted DAMSM terms at the last stage.

    fake_imgs: one (B, 3, S_i, S_i) per D; real_labels: (B,) ones; words_embs: (B, E, T);
    sent_emb: (B, E); match_labels: (B,) = arange(B); image_encoder(img) -> ((B, E, 17, 17), (B, E)).
    g_loss_i = BCE(U_i, 1) + BCE(C_i, 1) (no 1/2). Returns errG_total (scalar) and the parts,
    detached: ``{"g_loss0": ..., "w_loss": ..., "s_loss": ...}``.
    """
    if len(fake_imgs) < len(netsD):
        raise ValueError(f"fake_imgs: expected at least {len(netsD)} images (one per D), got {len(fake_imgs)}")
    batch_size = real_labels.size(0)
    sizes: dict[str, int] = {"B": batch_size}
    check_shape("sent_emb", sent_emb, ("B", "E"), sizes)
    check_shape("words_embs", words_embs, ("B", "E", "T"), sizes)
    bce = nn.BCELoss()
    logs: dict[str, Tensor] = {}
    errG_total = real_labels.new_zeros(())
    for i, netD in enumerate(netsD):
        check_shape(f"fake_imgs[{i}]", fake_imgs[i], ("B", 3, "S", "S"), {"B": batch_size})
        features = netD(fake_imgs[i])
        g_loss = bce(netD.COND_DNET(features, sent_emb), real_labels)
        if netD.UNCOND_DNET is not None:
            g_loss = bce(netD.UNCOND_DNET(features), real_labels) + g_loss
        errG_total = errG_total + g_loss
        logs[f"g_loss{i}"] = g_loss.detach()
        if i == len(netsD) - 1:
            region_features, cnn_code = image_encoder(fake_imgs[i])
            w_loss0, w_loss1, s_loss0, s_loss1 = damsm_loss_terms(
                region_features, cnn_code, words_embs, sent_emb, match_labels, cap_lens, class_ids, cfg
            )
            w_loss = (w_loss0 + w_loss1) * cfg.TRAIN.SMOOTH.LAMBDA
            s_loss = (s_loss0 + s_loss1) * cfg.TRAIN.SMOOTH.LAMBDA
            errG_total = errG_total + w_loss + s_loss
            logs["w_loss"] = w_loss.detach()
            logs["s_loss"] = s_loss.detach()
    return errG_total, logs


def KL_loss(mu: Tensor, logvar: Tensor) -> Tensor:
    """mean(-0.5 * (1 + logvar - mu^2 - exp(logvar))) over all B x C entries; mu, logvar: (B, C)."""
    check_shape("logvar", logvar, tuple(mu.shape))
    kld_element = (mu.pow(2) + logvar.exp()).mul(-1).add(1).add(logvar)
    return torch.mean(kld_element).mul(-0.5)
