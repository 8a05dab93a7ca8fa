"""The one place that chooses between the oracle and the fused DAMSM losses: the backend.

With backend "fast" the DAMSM terms come from :mod:`attngan_fast.losses.fused`, else from
:mod:`attngan_fast.losses.oracle`; :func:`generator_loss` is the oracle's with these terms.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch.nn as nn
from torch import Tensor

from ..backend import get_backend
from ..ops.damsm import CapLens
from . import fused, oracle
from .oracle import ClassIds

__all__ = ["damsm_loss_terms", "generator_loss"]


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
    """The four DAMSM terms ``(w_loss0, w_loss1, s_loss0, s_loss1)`` of a batch, unweighted.

    region_features: (B, E, 17, 17) and cnn_code: (B, E) from the image encoder; words_emb:
    (B, E, T) and sent_emb: (B, E) from the text encoder; labels: (B,) = arange(B).
    Backend "fast": the fused losses (no att maps, no host sync); "reference": the oracle's.
    Used by :func:`generator_loss` and DAMSM training.
    """
    terms = fused.damsm_loss_terms if get_backend() == "fast" else oracle.damsm_loss_terms
    return terms(region_features, cnn_code, words_emb, sent_emb, labels, cap_lens, class_ids, cfg)


def generator_loss(
    netsD: Sequence[nn.Module],
    image_encoder: nn.Module,
    fake_imgs: Sequence[Tensor],
    real_labels: Tensor,
    words_embs: Tensor,
    sent_emb: Tensor,
    match_labels: Tensor,
    cap_lens: CapLens,
    class_ids: ClassIds,
    cfg: Any,
) -> tuple[Tensor, dict[str, Tensor]]:
    """:func:`attngan_fast.losses.oracle.generator_loss` with the DAMSM terms of the backend
    (:func:`damsm_loss_terms`): adversarial terms of every stage plus LAMBDA-weighted DAMSM terms
    at the last stage. Returns errG_total (scalar) and the parts, detached."""
    return oracle.generator_loss(netsD, image_encoder, fake_imgs, real_labels, words_embs, sent_emb, match_labels,
                                 cap_lens, class_ids, cfg, damsm_terms=damsm_loss_terms)
