"""The reference losses: values against formulas written from the spec, batch size 1, masks."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attngan_fast import config
from attngan_fast.losses import (
    KL_loss,
    cosine_similarity,
    discriminator_loss,
    func_attention,
    generator_loss,
    sent_loss,
    words_loss,
)
from attngan_fast.models import D_NET64, D_NET128

CFG = config.load("bird_attn2")  # GAMMA1 4, GAMMA2 5, GAMMA3 10, LAMBDA 5
D = 8  # feature size of the toy inputs


def features(batch: int, T: int, lens: list[int]):
    """img_features (B, D, 17, 17), words_emb (B, D, T) zero at padding, cnn_code, sent_emb (B, D)."""
    img = torch.randn(batch, D, 17, 17)
    words = torch.randn(batch, D, T)
    pad = torch.arange(T).unsqueeze(0) >= torch.tensor(lens).unsqueeze(1)
    words = words.masked_fill(pad.unsqueeze(1), 0.0)
    return img, words, torch.randn(batch, D), torch.randn(batch, D)


def words_similarity_from_spec(img, words, lens, cfg):
    """sim[j, i] for image j and caption i, straight from the spec text (§6.1, §6.3)."""
    g1, g2 = cfg.TRAIN.SMOOTH.GAMMA1, cfg.TRAIN.SMOOTH.GAMMA2
    B = img.size(0)
    sim = torch.empty(B, B)
    for i in range(B):
        e = words[i, :, : lens[i]]  # (D, n)
        for j in range(B):
            regions = img[j].flatten(1)  # (D, S)
            s_bar = torch.softmax(regions.T @ e, dim=1)  # (S, n), over words
            alpha = torch.softmax(g1 * s_bar.T, dim=1)  # (n, S), over regions
            c = regions @ alpha.T  # (D, n)
            r = F.cosine_similarity(e, c, dim=0)  # (n,)
            sim[j, i] = torch.logsumexp(g2 * r, dim=0)
    return sim


def test_cosine_similarity():
    x1, x2 = torch.randn(6, 5), torch.randn(6, 5)
    torch.testing.assert_close(cosine_similarity(x1, x2), F.cosine_similarity(x1, x2))
    assert cosine_similarity(x1[:1], x2[:1]).shape == ()  # .squeeze() as the original
    assert (cosine_similarity(torch.zeros(2, 3), x2[:2, :3]) == 0).all()  # no NaN at zero norm


def test_func_attention():
    query, context = torch.randn(2, D, 4), torch.randn(2, D, 3, 5)
    c, attn = func_attention(query, context, 4.0)
    assert c.shape == (2, D, 4) and attn.shape == (2, 4, 3, 5)
    torch.testing.assert_close(attn.sum((2, 3)), torch.ones(2, 4))  # softmax over regions
    torch.testing.assert_close(c, torch.bmm(context.flatten(2), attn.flatten(2).transpose(1, 2)))
    with pytest.raises(ValueError, match=re.escape("context: expected (B=2, D=8, ih, iw), got (2, 7, 3, 5)")):
        func_attention(query, torch.randn(2, 7, 3, 5), 4.0)


def test_words_loss_matches_spec_formula():
    T = CFG.TEXT.WORDS_NUM
    lens = [T, 7, 1, 4]
    img, words, _, _ = features(4, T, lens)
    labels = torch.arange(4)
    loss0, loss1, att_maps = words_loss(img, words, labels, torch.tensor(lens), None, 4, CFG)
    sim = words_similarity_from_spec(img, words, lens, CFG) * CFG.TRAIN.SMOOTH.GAMMA3
    torch.testing.assert_close(loss0, F.cross_entropy(sim, labels))
    torch.testing.assert_close(loss1, F.cross_entropy(sim.T, labels))
    assert [tuple(a.shape) for a in att_maps] == [(1, n, 17, 17) for n in lens]
    assert torch.isfinite(loss0) and torch.isfinite(loss1)


def test_words_loss_extra_word_slots_and_gradients():
    """words_emb may have more columns than max(cap_lens); grads are finite."""
    img, words, _, _ = features(3, 6, [5, 1, 3])
    img.requires_grad_(True)
    words.requires_grad_(True)
    loss0, loss1, _ = words_loss(img, words, torch.arange(3), [5, 1, 3], None, 3, CFG)
    same, _, _ = words_loss(img, words[:, :, :5], torch.arange(3), [5, 1, 3], None, 3, CFG)
    torch.testing.assert_close(loss0, same)
    (loss0 + loss1).backward()
    assert torch.isfinite(img.grad).all() and torch.isfinite(words.grad).all()


def test_class_masks():
    lens = [6, 5, 3, 2]
    img, words, cnn, rnn = features(4, 6, lens)
    labels = torch.arange(4)
    ids = np.array([3, 7, 3, 9])
    w_ref = words_loss(img, words, labels, lens, ids, 4, CFG)[:2]
    s_ref = sent_loss(cnn, rnn, labels, ids, 4, CFG)
    for as_other in (ids.tolist(), torch.tensor(ids)):
        assert all(torch.equal(a, b) for a, b in zip(words_loss(img, words, labels, lens, as_other, 4, CFG)[:2], w_ref))
        assert all(torch.equal(a, b) for a, b in zip(sent_loss(cnn, rnn, labels, as_other, 4, CFG), s_ref))
    # same-class pairs (0, 2) and (2, 0) leave the softmax; the diagonal stays
    sim = words_similarity_from_spec(img, words, lens, CFG) * CFG.TRAIN.SMOOTH.GAMMA3
    sim[0, 2] = sim[2, 0] = float("-inf")
    torch.testing.assert_close(w_ref[0], F.cross_entropy(sim, labels))
    torch.testing.assert_close(w_ref[1], F.cross_entropy(sim.T, labels))
    # all classes distinct: same as no class ids
    distinct = np.arange(4)
    for a, b in zip(words_loss(img, words, labels, lens, distinct, 4, CFG)[:2],
                    words_loss(img, words, labels, lens, None, 4, CFG)[:2]):
        assert torch.equal(a, b)


def test_sent_loss_matches_formula():
    cnn, rnn = torch.randn(5, D), torch.randn(5, D)
    labels = torch.arange(5)
    loss0, loss1 = sent_loss(cnn, rnn, labels, None, 5, CFG)
    scores = F.cosine_similarity(cnn.unsqueeze(1), rnn.unsqueeze(0), dim=2) * CFG.TRAIN.SMOOTH.GAMMA3
    torch.testing.assert_close(loss0, F.cross_entropy(scores, labels))
    torch.testing.assert_close(loss1, F.cross_entropy(scores.T, labels))
    assert sent_loss(cnn, rnn, None, None, 5, CFG) == (None, None)


def test_batch_size_one():
    img, words, cnn, rnn = features(1, 4, [4])
    labels = torch.zeros(1, dtype=torch.long)
    s0, s1 = sent_loss(cnn, rnn, labels, np.array([2]), 1, CFG)
    w0, w1, att = words_loss(img, words, labels, [4], np.array([2]), 1, CFG)
    for loss in (s0, s1, w0, w1):  # a single candidate: CE is exactly 0
        assert loss.shape == () and loss.item() == 0
    assert att[0].shape == (1, 4, 17, 17)
    w0, _, _ = words_loss(img, words[:, :, :1], labels, [1], None, 1, CFG)
    assert w0.item() == 0


def test_loss_bad_shapes():
    img, words, cnn, rnn = features(3, 5, [5, 4, 2])
    labels = torch.arange(3)
    with pytest.raises(ValueError, match=re.escape("words_emb: expected (3, D=8, T), got (3, 6, 5)")):
        words_loss(img, torch.randn(3, 6, 5), labels, [5, 4, 2], None, 3, CFG)
    with pytest.raises(ValueError, match=re.escape("img_features: expected (3, D, H, W), got (2, 8, 17, 17)")):
        words_loss(img[:2], words, labels, [5, 4, 2], None, 3, CFG)
    with pytest.raises(ValueError, match=re.escape("cap_lens: expected (3,), got (2,)")):
        words_loss(img, words, labels, [5, 4], None, 3, CFG)
    with pytest.raises(ValueError, match=re.escape("class_ids: expected (3,), got (4,)")):
        words_loss(img, words, labels, [5, 4, 2], np.arange(4), 3, CFG)
    with pytest.raises(ValueError, match=re.escape("rnn_code: expected (3, 8), got (3, 7)")):
        sent_loss(cnn, torch.randn(3, 7), labels, None, 3, CFG)
    with pytest.raises(ValueError, match=re.escape("labels: expected (3,), got (2,)")):
        sent_loss(cnn, rnn, labels[:2], None, 3, CFG)
    with pytest.raises(ValueError, match=re.escape("logvar: expected (3, 8), got (3, 4)")):
        KL_loss(cnn, torch.zeros(3, 4))


def test_kl_loss():
    mu, logvar = torch.randn(4, 6), torch.randn(4, 6)
    expected = (-0.5 * (1 + logvar - mu**2 - logvar.exp())).mean()
    torch.testing.assert_close(KL_loss(mu, logvar), expected)
    assert KL_loss(torch.zeros(2, 3), torch.zeros(2, 3)).item() == 0


def small_cfg(**overrides):
    base = {"GAN.GF_DIM": 4, "GAN.DF_DIM": 2, "TEXT.EMBEDDING_DIM": D}
    return config.load("bird_attn2", **{**base, **overrides})


@pytest.mark.parametrize("b_jcu", [True, False])
def test_discriminator_loss(b_jcu):
    cfg = small_cfg()
    netD = D_NET64(cfg, b_jcu=b_jcu)
    real = torch.rand(3, 3, 64, 64) * 2 - 1
    fake = (torch.rand(3, 3, 64, 64) * 2 - 1).requires_grad_(True)
    cond = torch.randn(3, D)
    ones, zeros = torch.ones(3), torch.zeros(3)
    errD = discriminator_loss(netD, real, fake, cond, ones, zeros)
    errD.backward()
    assert fake.grad is None  # the fakes are detached
    assert all(p.grad is not None for p in netD.parameters())
    # the same terms by hand (train-mode BN: real and fake in separate calls, as in the loss)
    with torch.no_grad():
        f_real, f_fake = netD(real), netD(fake)
        bce = F.binary_cross_entropy
        cond_real = bce(netD.COND_DNET(f_real, cond), ones)
        cond_fake = bce(netD.COND_DNET(f_fake, cond), zeros)
        cond_wrong = bce(netD.COND_DNET(f_real[:2], cond[1:]), zeros[1:])
        if b_jcu:
            expected = ((bce(netD.UNCOND_DNET(f_real), ones) + cond_real) / 2
                        + (bce(netD.UNCOND_DNET(f_fake), zeros) + cond_fake + cond_wrong) / 3)
        else:
            expected = cond_real + (cond_fake + cond_wrong) / 2
    torch.testing.assert_close(errD.detach(), expected)
    netD.eval()  # batch size 1: no mismatched pair, finite loss
    errD1 = discriminator_loss(netD, real[:1], fake[:1], cond[:1], ones[:1], zeros[:1])
    assert torch.isfinite(errD1)
    with pytest.raises(ValueError, match=re.escape("conditions: expected (B=3, E), got (2, 8)")):
        discriminator_loss(netD, real, fake, cond[:2], ones, zeros)


class TinyImageEncoder(nn.Module):
    """Stand-in for CNN_ENCODER: (B, 3, S, S) -> ((B, E, 17, 17), (B, E))."""

    def __init__(self, nef: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, nef, 3, padding=1)

    def forward(self, x):
        h = F.adaptive_avg_pool2d(self.conv(x), 17)
        return h, h.mean((2, 3))


def test_generator_loss():
    cfg = small_cfg()
    netsD = [D_NET64(cfg), D_NET128(cfg, b_jcu=False)]
    encoder = TinyImageEncoder(D)
    fakes = [(torch.rand(2, 3, s, s) * 2 - 1).requires_grad_(True) for s in (64, 128)]
    _, words, _, sent = features(2, 5, [5, 3])
    ones, labels = torch.ones(2), torch.arange(2)
    ids = np.array([1, 4])
    errG, logs = generator_loss(netsD, encoder, fakes, ones, words, sent, labels, [5, 3], ids, cfg)
    assert set(logs) == {"g_loss0", "g_loss1", "w_loss", "s_loss"}
    torch.testing.assert_close(errG.detach(), sum(logs.values()))
    lam = cfg.TRAIN.SMOOTH.LAMBDA
    region, code = encoder(fakes[1])
    w0, w1, _ = words_loss(region, words, labels, [5, 3], ids, 2, cfg)
    s0, s1 = sent_loss(code, sent, labels, ids, 2, cfg)
    # the default backend "fast" takes the DAMSM terms from the fused losses: fp32 kernel tolerance
    torch.testing.assert_close(logs["w_loss"], ((w0 + w1) * lam).detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logs["s_loss"], ((s0 + s1) * lam).detach(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        feats = netsD[1](fakes[1])
        g1 = F.binary_cross_entropy(netsD[1].COND_DNET(feats, sent), ones)  # no UNCOND head
    torch.testing.assert_close(logs["g_loss1"], g1)
    errG.backward()
    assert all(torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0 for f in fakes)
    with pytest.raises(ValueError, match="fake_imgs: expected at least 2 images"):
        generator_loss(netsD, encoder, fakes[:1], ones, words, sent, labels, [5, 3], ids, cfg)
