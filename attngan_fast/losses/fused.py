"""DAMSM losses on the fused similarity op: drop-in for the oracle's ``words_loss`` / ``sent_loss``.

Same signatures, values and gradients as :mod:`attngan_fast.losses.oracle` (which stays the
oracle), without its per-caption Python loop and without host syncs: class masks are built on the
inputs' device and the lengths stay on the device. Only the att maps of :func:`words_loss` (a list
of tensors of different lengths) need the caption lengths on the host; pass
``return_att_maps=False`` where they are not used (:func:`damsm_loss_terms` does).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.checks import check_shape
from ..ops.damsm import CapLens, damsm_word_similarity
from ..reference.damsm import caption_lengths
from .oracle import ClassIds, check_sent_loss_inputs, class_mask

__all__ = ["damsm_loss_terms", "sent_loss", "words_loss"]


def _cross_entropies(
    scores: Tensor, labels: Optional[Tensor], class_ids: ClassIds
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """CE(scores, labels) and CE(scores^T, labels) after setting same-class off-diagonal entries to -inf.

    scores: (B, B). The diagonal is never masked, so a row or column whose negatives are all
    masked gives a loss of 0 and a zero gradient, not NaN.
    """
    masks = class_mask(class_ids, scores.size(0), scores.device)
    if masks is not None:
        scores = scores.masked_fill(masks, float("-inf"))
    if labels is None:
        return None, None
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.transpose(0, 1), labels)


def words_loss(
    img_features: Tensor,
    words_emb: Tensor,
    labels: Optional[Tensor],
    cap_lens: CapLens,
    class_ids: ClassIds,
    batch_size: int,
    cfg: Any,
    *,
    return_att_maps: bool = True,
) -> tuple[Optional[Tensor], Optional[Tensor], list[Tensor]]:
    """Word-level DAMSM loss on the fused similarity op.

    img_features: (B, D, H, W) region features; words_emb: (B, D, T) word features;
    labels: (B,) int64 or None (then both losses are None); cap_lens: (B,) int tensor or B ints in
    1..T; class_ids: (B,) numpy array, list, tensor or None.

    Returns CE(S, labels), CE(S^T, labels) with S = GAMMA3 * sim (images x captions, same-class
    off-diagonal entries at -inf), float32 (float64 for float64 inputs), and the att maps
    [(1, cap_lens[i], H, W)] of image i with caption i (no gradient). With
    ``return_att_maps=False`` the list is empty and nothing waits for the device.
    """
    sizes: dict[str, int] = {}
    check_shape("img_features", img_features, (batch_size, "D", "H", "W"), sizes)
    check_shape("words_emb", words_emb, (batch_size, "D", "T"), sizes)
    if labels is not None:
        check_shape("labels", labels, (batch_size,))
    smooth = cfg.TRAIN.SMOOTH
    sim, attn = damsm_word_similarity(
        words_emb, cap_lens, img_features, smooth.GAMMA1, smooth.GAMMA2, need_attention=return_att_maps
    )
    loss0, loss1 = _cross_entropies(sim * smooth.GAMMA3, labels, class_ids)
    if attn is None:
        return loss0, loss1, []
    return loss0, loss1, [attn[i : i + 1, :n] for i, n in enumerate(caption_lengths(cap_lens))]


def sent_loss(
    cnn_code: Tensor,
    rnn_code: Tensor,
    labels: Optional[Tensor],
    class_ids: ClassIds,
    batch_size: int,
    cfg: Any,
    eps: float = 1e-8,
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """Sentence-level DAMSM loss: one matmul, the clamp on the product of the norms, two CEs.

    cnn_code: (B, D) image codes (rows); rnn_code: (B, D) sentence codes (columns); labels: (B,)
    int64 or None. scores[i, j] = GAMMA3 * <cnn_i, rnn_j> / max(|cnn_i| |rnn_j|, eps), same-class
    off-diagonal entries at -inf. Returns CE(scores, labels), CE(scores^T, labels).
    """
    check_sent_loss_inputs(cnn_code, rnn_code, labels, batch_size)
    norms = torch.linalg.vector_norm(cnn_code, dim=1).unsqueeze(1) * torch.linalg.vector_norm(rnn_code, dim=1)
    scores = cnn_code @ rnn_code.transpose(0, 1) / norms.clamp(min=eps) * cfg.TRAIN.SMOOTH.GAMMA3
    return _cross_entropies(scores, labels, class_ids)


def damsm_loss_terms(
    region_features: Tensor,
    cnn_code: Tensor,
    words_emb: Tensor,
    sent_emb: Tensor,
    labels: Tensor,
    cap_lens: CapLens,
    class_ids: ClassIds,
    cfg: Any,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``attngan_fast.losses.oracle.damsm_loss_terms`` by the fused losses: ``(w_loss0, w_loss1,
    s_loss0, s_loss1)``, unweighted (no att maps, no host sync)."""
    batch_size = region_features.size(0)
    w_loss0, w_loss1, _ = words_loss(
        region_features, words_emb, labels, cap_lens, class_ids, batch_size, cfg, return_att_maps=False
    )
    s_loss0, s_loss1 = sent_loss(cnn_code, sent_emb, labels, class_ids, batch_size, cfg)
    return w_loss0, w_loss1, s_loss0, s_loss1
