"""AttnGAN generator (original ``code/model.py``), checkpoint compatible.

Every size comes from the ``cfg`` argument (see :mod:`attngan_fast.config`): ``GAN.GF_DIM``,
``GAN.Z_DIM``, ``GAN.CONDITION_DIM``, ``GAN.R_NUM``, ``GAN.MASK_MODE``, ``TEXT.EMBEDDING_DIM``,
``TREE.BRANCH_NUM``.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn
from torch import Tensor

from ..ops.checks import check_shape
from ..ops.dispatch import use_kernel
from ..ops.img_net import img_conv_tanh
from .attention import GlobalAttentionGeneral
from .blocks import GLU, ResBlock, conv3x3, upBlock

__all__ = ["CA_NET", "INIT_STAGE_G", "NEXT_STAGE_G", "GET_IMAGE_G", "G_NET", "G_DCGAN", "is_img_conv_tanh"]


class CA_NET(nn.Module):
    """Conditioning augmentation: ``fc`` Linear(E, 4C) -> GLU (named ``relu``) -> mu, logvar.

    c_code = mu + eps * exp(logvar / 2) with eps ~ N(0, 1) drawn in train and eval mode alike
    (``torch.randn_like`` on the input's device), unless given.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.t_dim = cfg.TEXT.EMBEDDING_DIM
        self.c_dim = cfg.GAN.CONDITION_DIM
        self.fc = nn.Linear(self.t_dim, self.c_dim * 4, bias=True)
        self.relu = GLU()

    def encode(self, text_embedding: Tensor) -> tuple[Tensor, Tensor]:
        """text_embedding: (B, E) -> mu (B, C), logvar (B, C)."""
        x = self.relu(self.fc(text_embedding))
        return x[:, : self.c_dim], x[:, self.c_dim :]

    def reparametrize(self, mu: Tensor, logvar: Tensor, eps: Optional[Tensor] = None) -> Tensor:
        """mu, logvar, eps: (B, C) -> c_code (B, C)."""
        std = torch.exp(0.5 * logvar)
        if eps is None:
            eps = torch.randn_like(std)
        return eps * std + mu

    def forward(self, text_embedding: Tensor, eps: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        """text_embedding: (B, E); eps: (B, C) or None. Returns c_code, mu, logvar, each (B, C)."""
        mu, logvar = self.encode(text_embedding)
        return self.reparametrize(mu, logvar, eps), mu, logvar


class INIT_STAGE_G(nn.Module):
    """First stage: cat(c_code, z) -> ``fc`` [Linear, BatchNorm1d, GLU] -> (B, ngf, 4, 4) ->
    ``upsample1..4`` -> (B, ngf/16, 64, 64)."""

    def __init__(self, ngf: int, ncf: int, cfg: Any) -> None:
        super().__init__()
        self.gf_dim = ngf
        self.in_dim = cfg.GAN.Z_DIM + ncf
        self.fc = nn.Sequential(
            nn.Linear(self.in_dim, ngf * 4 * 4 * 2, bias=False),
            nn.BatchNorm1d(ngf * 4 * 4 * 2),
            GLU(),
        )
        self.upsample1 = upBlock(ngf, ngf // 2)
        self.upsample2 = upBlock(ngf // 2, ngf // 4)
        self.upsample3 = upBlock(ngf // 4, ngf // 8)
        self.upsample4 = upBlock(ngf // 8, ngf // 16)

    def forward(self, z_code: Tensor, c_code: Tensor) -> Tensor:
        """z_code: (B, Z); c_code: (B, C) -> h (B, ngf/16, 64, 64)."""
        c_z_code = torch.cat((c_code, z_code), 1)
        out = self.fc(c_z_code).view(-1, self.gf_dim, 4, 4)
        out = self.upsample1(out)
        out = self.upsample2(out)
        out = self.upsample3(out)
        return self.upsample4(out)


class NEXT_STAGE_G(nn.Module):
    """Attention stage: ``att`` -> cat(h, context) -> ``residual`` (R x ResBlock(2ngf)) ->
    ``upsample`` upBlock(2ngf -> ngf)."""

    def __init__(self, ngf: int, nef: int, ncf: int, cfg: Any) -> None:
        super().__init__()
        self.gf_dim = ngf
        self.ef_dim = nef
        self.cf_dim = ncf
        self.num_residual = cfg.GAN.R_NUM
        self.att = GlobalAttentionGeneral(ngf, nef, mask_mode=cfg.GAN.MASK_MODE)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(self.num_residual)])
        self.upsample = upBlock(ngf * 2, ngf)

    def forward(
        self, h_code: Tensor, c_code: Tensor, word_embs: Tensor, mask: Optional[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """h_code: (B, ngf, H, W); c_code: (B, C), unused as in the original; word_embs:
        (B, nef, T); mask: (B, T) bool or None.

        Returns h (B, ngf, 2H, 2W) and attention weights (B, T, H, W).
        """
        self.att.applyMask(mask)
        context, att = self.att(h_code, word_embs)
        out = torch.cat((h_code, context), 1)
        out = self.residual(out)
        return self.upsample(out), att


class GET_IMAGE_G(nn.Module):
    """``img`` [conv3x3(ngf -> 3), Tanh]: h (B, ngf, S, S) -> image (B, 3, S, S) in [-1, 1].

    Fast backend: :func:`attngan_fast.ops.img_conv_tanh` (the input gradient as a forward conv)."""

    def __init__(self, ngf: int) -> None:
        super().__init__()
        self.gf_dim = ngf
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    @classmethod
    def from_modules(cls, ngf: int, img: nn.Sequential) -> "GET_IMAGE_G":
        """The layer around an existing ``img`` Sequential (shared, not copied)."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.gf_dim, layer.img = ngf, img
        return layer

    def forward(self, h_code: Tensor) -> Tensor:
        if is_img_conv_tanh(self.img) and use_kernel("img_conv_tanh", h_code):
            return img_conv_tanh(h_code, self.img[0].weight)
        return self.img(h_code)


def is_img_conv_tanh(img: nn.Module) -> bool:
    """An ``nn.Sequential`` of [conv3x3 (stride 1, padding 1, no bias), Tanh]: what ``img_conv_tanh`` computes."""
    if type(img) is not nn.Sequential or len(img) != 2 or type(img[1]) is not nn.Tanh:
        return False
    conv = img[0]
    return (type(conv) is nn.Conv2d and conv.kernel_size == (3, 3) and conv.stride == (1, 1)
            and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.bias is None
            and conv.padding_mode == "zeros")


def _check_g_inputs(
    cfg: Any, z_code: Tensor, sent_emb: Tensor, word_embs: Tensor, mask: Optional[Tensor], eps: Optional[Tensor]
) -> None:
    sizes: dict[str, int] = {}
    check_shape("z_code", z_code, ("B", cfg.GAN.Z_DIM), sizes)
    check_shape("sent_emb", sent_emb, ("B", cfg.TEXT.EMBEDDING_DIM), sizes)
    if cfg.TREE.BRANCH_NUM > 1:
        check_shape("word_embs", word_embs, ("B", cfg.TEXT.EMBEDDING_DIM, "T"), sizes)
        if mask is not None:
            check_shape("mask", mask, ("B", "T"), sizes)
    if eps is not None:
        check_shape("eps", eps, ("B", cfg.GAN.CONDITION_DIM), sizes)


class _StagedGenerator(nn.Module):
    """Shared layout of G_NET and G_DCGAN: ``ca_net``, ``h_net1`` (+ ``h_net2``, ``h_net3``)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.branch_num = cfg.TREE.BRANCH_NUM
        self.ngf = cfg.GAN.GF_DIM
        self.nef = cfg.TEXT.EMBEDDING_DIM
        self.ncf = cfg.GAN.CONDITION_DIM


class G_NET(_StagedGenerator):
    """The AttnGAN generator: an image per stage (64, 128, 256 px for BRANCH_NUM 3).

    Sub-modules in state_dict order: ``ca_net``, ``h_net1``, ``img_net1``, ``h_net2``,
    ``img_net2``, ``h_net3``, ``img_net3`` (as far as ``cfg.TREE.BRANCH_NUM`` goes).
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.ca_net = CA_NET(cfg)
        self.h_net1 = INIT_STAGE_G(self.ngf * 16, self.ncf, cfg)
        self.img_net1 = GET_IMAGE_G(self.ngf)
        if self.branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(self.ngf, self.nef, self.ncf, cfg)
            self.img_net2 = GET_IMAGE_G(self.ngf)
        if self.branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(self.ngf, self.nef, self.ncf, cfg)
            self.img_net3 = GET_IMAGE_G(self.ngf)

    def forward(
        self,
        z_code: Tensor,
        sent_emb: Tensor,
        word_embs: Tensor,
        mask: Optional[Tensor],
        eps: Optional[Tensor] = None,
    ) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """z_code: (B, Z); sent_emb: (B, E); word_embs: (B, E, T); mask: (B, T) bool (True =
        padded word) or None; eps: (B, C) CA noise or None (drawn from the global RNG).

        Returns fake_imgs [(B, 3, 64, 64), (B, 3, 128, 128), (B, 3, 256, 256)],
        att_maps [(B, T, 64, 64), (B, T, 128, 128)], mu (B, C), logvar (B, C).
        """
        _check_g_inputs(self.cfg, z_code, sent_emb, word_embs, mask, eps)
        c_code, mu, logvar = self.ca_net(sent_emb, eps)
        h_code = self.h_net1(z_code, c_code)
        fake_imgs = [self.img_net1(h_code)]
        att_maps = []
        if self.branch_num > 1:
            h_code, att = self.h_net2(h_code, c_code, word_embs, mask)
            fake_imgs.append(self.img_net2(h_code))
            att_maps.append(att)
        if self.branch_num > 2:
            h_code, att = self.h_net3(h_code, c_code, word_embs, mask)
            fake_imgs.append(self.img_net3(h_code))
            att_maps.append(att)
        return fake_imgs, att_maps, mu, logvar


class G_DCGAN(_StagedGenerator):
    """The AttnGAN generator of the DCGAN variant (``GAN.B_DCGAN``): one shared ``img_net``
    on the final stage only."""

    def __init__(self, cfg: Any) -> None:
        super().__init__(cfg)
        self.ca_net = CA_NET(cfg)
        self.h_net1 = INIT_STAGE_G(self.ngf * 16, self.ncf, cfg)
        if self.branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(self.ngf, self.nef, self.ncf, cfg)
        if self.branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(self.ngf, self.nef, self.ncf, cfg)
        self.img_net = GET_IMAGE_G(self.ngf)

    def forward(
        self,
        z_code: Tensor,
        sent_emb: Tensor,
        word_embs: Tensor,
        mask: Optional[Tensor],
        eps: Optional[Tensor] = None,
    ) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        """Arguments as :meth:`G_NET.forward`. Returns [final image (B, 3, S, S)], att_maps,
        mu (B, C), logvar (B, C)."""
        _check_g_inputs(self.cfg, z_code, sent_emb, word_embs, mask, eps)
        c_code, mu, logvar = self.ca_net(sent_emb, eps)
        h_code = self.h_net1(z_code, c_code)
        att_maps = []
        if self.branch_num > 1:
            h_code, att = self.h_net2(h_code, c_code, word_embs, mask)
            att_maps.append(att)
        if self.branch_num > 2:
            h_code, att = self.h_net3(h_code, c_code, word_embs, mask)
            att_maps.append(att)
        return [self.img_net(h_code)], att_maps, mu, logvar
