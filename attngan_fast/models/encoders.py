"""DAMSM text and image encoders (original ``code/model.py``), checkpoint compatible."""
from __future__ import annotations

import os
import warnings
from typing import Any, Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torchvision.models import inception_v3

from ..io import FileFormatError, describe, load_module_state, load_state_dict_file
from .blocks import conv1x1

__all__ = ["RNN_ENCODER", "CNN_ENCODER", "INCEPTION_BLOCKS", "INCEPTION_EXPECTED", "load_inception_weights"]

INCEPTION_EXPECTED = "a torchvision inception_v3 state_dict"


def load_inception_weights(path: Union[str, os.PathLike]) -> dict[str, Tensor]:
    """A torchvision ``inception_v3`` state_dict file without its ``AuxLogits.*`` entries;
    ValueError naming the file and what it holds if it is not one (no ``fc.weight``)."""
    state = load_state_dict_file(path, INCEPTION_EXPECTED)
    if "fc.weight" not in state:
        raise FileFormatError(f"{path}: expected {INCEPTION_EXPECTED}, found {describe(state)} without 'fc.weight'")
    return {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}

Hidden = Union[Tensor, tuple[Tensor, Tensor]]

# The torchvision Inception3 submodules CNN_ENCODER re-registers, in forward order.
INCEPTION_BLOCKS = (
    "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
    "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
    "Mixed_7a", "Mixed_7b", "Mixed_7c",
)


class RNN_ENCODER(nn.Module):
    """Bidirectional LSTM (or GRU, ``cfg.RNN_TYPE``) text encoder.

    Attributes ``encoder`` (Embedding(ntoken, ninput), uniform(-0.1, 0.1)), ``drop`` and ``rnn``
    (hidden size ``nhidden // num_directions`` per direction) give the original state_dict keys.
    """

    def __init__(
        self,
        ntoken: int,
        cfg: Any,
        ninput: int = 300,
        drop_prob: float = 0.5,
        nhidden: Optional[int] = None,
        nlayers: int = 1,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        if cfg.RNN_TYPE not in ("LSTM", "GRU"):
            raise ValueError(f"cfg.RNN_TYPE: expected 'LSTM' or 'GRU', got {cfg.RNN_TYPE!r}")
        self.ntoken = ntoken
        self.ninput = ninput
        self.drop_prob = drop_prob
        self.nlayers = nlayers
        self.bidirectional = bidirectional
        self.rnn_type = cfg.RNN_TYPE
        self.num_directions = 2 if bidirectional else 1
        total = cfg.TEXT.EMBEDDING_DIM if nhidden is None else nhidden
        self.nhidden = total // self.num_directions

        self.encoder = nn.Embedding(ntoken, ninput)
        self.drop = nn.Dropout(drop_prob)
        rnn_cls = nn.LSTM if self.rnn_type == "LSTM" else nn.GRU
        # The original passes dropout=drop_prob; torch ignores it (with a warning) for one layer.
        self.rnn = rnn_cls(
            ninput, self.nhidden, nlayers, batch_first=True,
            dropout=drop_prob if nlayers > 1 else 0.0, bidirectional=bidirectional,
        )
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)

    def init_hidden(self, bsz: int) -> Hidden:
        """Zero initial state(s), each (nlayers * num_directions, bsz, nhidden)."""
        weight = self.encoder.weight
        h0 = weight.new_zeros(self.nlayers * self.num_directions, bsz, self.nhidden)
        if self.rnn_type == "LSTM":
            return h0, torch.zeros_like(h0)
        return h0

    def forward(
        self, captions: Tensor, cap_lens: Union[Tensor, list[int]], hidden: Optional[Hidden] = None
    ) -> tuple[Tensor, Tensor]:
        """captions: (B, L) int64 word ids; cap_lens: (B,) lengths >= 1 (any order);
        hidden: from :meth:`init_hidden`, or None for zeros.

        Returns words_emb (B, E, T) with T = max(cap_lens), exactly 0 at padded steps, and
        sent_emb (B, E) = [forward final state || backward final state] of the last layer.
        """
        if captions.dim() != 2:
            raise ValueError(f"captions: expected (B, L), got {tuple(captions.shape)}")
        lengths = torch.as_tensor(cap_lens).cpu()
        if tuple(lengths.shape) != (captions.size(0),):
            raise ValueError(f"cap_lens: expected ({captions.size(0)},), got {tuple(lengths.shape)}")
        if hidden is None:
            hidden = self.init_hidden(captions.size(0))
        emb = self.drop(self.encoder(captions))
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        output, hidden = self.rnn(packed, hidden)
        output = pad_packed_sequence(output, batch_first=True)[0]  # (B, T, E)
        words_emb = output.transpose(1, 2)
        h_n = hidden[0] if self.rnn_type == "LSTM" else hidden
        last = h_n.view(self.nlayers, self.num_directions, -1, self.nhidden)[-1]  # (dirs, B, nhidden)
        sent_emb = last.transpose(0, 1).reshape(-1, self.nhidden * self.num_directions)
        return words_emb, sent_emb


class CNN_ENCODER(nn.Module):
    """Frozen Inception-v3 backbone + trainable heads ``emb_features`` and ``emb_cnn_code``.

    weights: path to a torchvision-format ``inception_v3`` state_dict (ImageNet weights,
        ``inception_v3_google-*.pth``); ``AuxLogits.*`` entries are ignored. Nothing is ever
        downloaded; with None the backbone stays randomly initialised (with a warning).
    align_corners: of the bilinear resize to 299x299. The original ran it with torch 0.3
        (behaving like True); modern torch defaults to False.
    """

    def __init__(
        self,
        nef: int,
        weights: Optional[Union[str, os.PathLike]] = None,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        self.nef = nef
        self.align_corners = align_corners
        model = inception_v3(weights=None, aux_logits=False, init_weights=False)
        if weights is None:
            warnings.warn(
                "CNN_ENCODER: weights=None, the Inception-v3 backbone is randomly initialised; pass "
                "weights=<path to a torchvision inception_v3 state_dict> for ImageNet features (or "
                "load a whole CNN_ENCODER checkpoint such as image_encoder200.pth next)",
                stacklevel=2,
            )
        else:
            load_module_state(model, load_inception_weights(weights), weights, INCEPTION_EXPECTED)
        for param in model.parameters():
            param.requires_grad_(False)
        for name in INCEPTION_BLOCKS:
            self.add_module(name, getattr(model, name))
        self.emb_features = conv1x1(768, nef)
        self.emb_cnn_code = nn.Linear(2048, nef)
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, 3, H, W) in [-1, 1] (no ImageNet normalisation, as in the original).

        Returns region features (B, nef, 17, 17) and the global code cnn_code (B, nef).
        """
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"x: expected (B, 3, H, W), got {tuple(x.shape)}")
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=self.align_corners)
        x = self.Conv2d_1a_3x3(x)  # 32 x 149 x 149
        x = self.Conv2d_2a_3x3(x)  # 32 x 147 x 147
        x = self.Conv2d_2b_3x3(x)  # 64 x 147 x 147
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 64 x 73 x 73
        x = self.Conv2d_3b_1x1(x)  # 80 x 73 x 73
        x = self.Conv2d_4a_3x3(x)  # 192 x 71 x 71
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # 192 x 35 x 35
        x = self.Mixed_5b(x)  # 256 x 35 x 35
        x = self.Mixed_5c(x)  # 288 x 35 x 35
        x = self.Mixed_5d(x)  # 288 x 35 x 35
        x = self.Mixed_6a(x)  # 768 x 17 x 17
        x = self.Mixed_6b(x)
        x = self.Mixed_6c(x)
        x = self.Mixed_6d(x)
        x = self.Mixed_6e(x)  # 768 x 17 x 17
        features = x
        x = self.Mixed_7a(x)  # 1280 x 8 x 8
        x = self.Mixed_7b(x)  # 2048 x 8 x 8
        x = self.Mixed_7c(x)  # 2048 x 8 x 8
        x = F.avg_pool2d(x, kernel_size=8).flatten(1)  # 2048
        cnn_code = self.emb_cnn_code(x)
        features = self.emb_features(features)
        return features, cnn_code
