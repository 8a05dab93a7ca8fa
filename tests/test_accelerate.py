"""``attngan_fast.accelerate`` on a generator built the way the original AttnGAN code builds it.

The classes below mirror the original ``code/model.py`` / ``GlobalAttention.py`` structure (their
own GLU, upBlock, ResBlock and attention classes, the original masking included), written from
the spec; they share nothing with attngan_fast's model classes but the parameter names.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import attngan_fast
from attngan_fast import config, losses
from attngan_fast.models import D_NET128, G_NET
from attngan_fast.ops import down_blocks as down_ops
from tests.kernel_checks import TOLERANCES, assert_close, assert_low_precision_ok

# ---------------------------------------------------------------- the original structure, mirrored


class GLU(nn.Module):
    def forward(self, x):
        nc = x.size(1) // 2
        return x[:, :nc] * torch.sigmoid(x[:, nc:])


def conv3x3(i, o):
    return nn.Conv2d(i, o, kernel_size=3, stride=1, padding=1, bias=False)


def upBlock(i, o):
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(i, 2 * o), nn.BatchNorm2d(2 * o), GLU())


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(conv3x3(c, 2 * c), nn.BatchNorm2d(2 * c), GLU(), conv3x3(c, c), nn.BatchNorm2d(c))

    def forward(self, x):
        out = self.block(x)
        out += x
        return out


class GlobalAttentionGeneral(nn.Module):
    def __init__(self, idf, cdf):
        super().__init__()
        self.conv_context = nn.Conv2d(cdf, idf, 1, bias=False)
        self.sm = nn.Softmax(dim=1)
        self.mask = None

    def applyMask(self, mask):
        self.mask = mask

    def forward(self, input, context):
        b, _, ih, iw = input.shape
        q, t = ih * iw, context.size(2)
        target = input.view(b, -1, q).transpose(1, 2)
        source = self.conv_context(context.unsqueeze(3)).squeeze(3)
        attn = torch.bmm(target, source).view(b * q, t)
        if self.mask is not None:
            attn.data.masked_fill_(self.mask.repeat(q, 1).data, -float("inf"))  # the original's alignment
        attn = self.sm(attn).view(b, q, t).transpose(1, 2).contiguous()
        return torch.bmm(source, attn).view(b, -1, ih, iw), attn.view(b, -1, ih, iw)


class CA_NET(nn.Module):
    def __init__(self, e, c):
        super().__init__()
        self.c_dim = c
        self.fc = nn.Linear(e, 4 * c, bias=True)
        self.relu = GLU()

    def forward(self, sent):
        x = self.relu(self.fc(sent))
        mu, logvar = x[:, : self.c_dim], x[:, self.c_dim :]
        std = logvar.mul(0.5).exp_()
        return std.new_empty(std.size()).normal_() * std + mu, mu, logvar


class INIT_STAGE_G(nn.Module):
    def __init__(self, ngf, nz):
        super().__init__()
        self.gf_dim = ngf
        self.fc = nn.Sequential(nn.Linear(nz, ngf * 32, bias=False), nn.BatchNorm1d(ngf * 32), GLU())
        self.upsample1 = upBlock(ngf, ngf // 2)
        self.upsample2 = upBlock(ngf // 2, ngf // 4)
        self.upsample3 = upBlock(ngf // 4, ngf // 8)
        self.upsample4 = upBlock(ngf // 8, ngf // 16)

    def forward(self, z, c):
        out = self.fc(torch.cat((c, z), 1)).view(-1, self.gf_dim, 4, 4)
        return self.upsample4(self.upsample3(self.upsample2(self.upsample1(out))))


class NEXT_STAGE_G(nn.Module):
    def __init__(self, ngf, nef, r_num):
        super().__init__()
        self.att = GlobalAttentionGeneral(ngf, nef)
        self.residual = nn.Sequential(*[ResBlock(2 * ngf) for _ in range(r_num)])
        self.upsample = upBlock(2 * ngf, ngf)

    def forward(self, h, c, words, mask):
        self.att.applyMask(mask)
        ctx, att = self.att(h, words)
        return self.upsample(self.residual(torch.cat((h, ctx), 1))), att


class GET_IMAGE_G(nn.Module):
    def __init__(self, ngf):
        super().__init__()
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h):
        return self.img(h)


class OriginalG(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        g, e, c = cfg.GAN.GF_DIM, cfg.TEXT.EMBEDDING_DIM, cfg.GAN.CONDITION_DIM
        self.ca_net = CA_NET(e, c)
        self.h_net1 = INIT_STAGE_G(16 * g, c + cfg.GAN.Z_DIM)
        self.img_net1 = GET_IMAGE_G(g)
        self.h_net2 = NEXT_STAGE_G(g, e, cfg.GAN.R_NUM)
        self.img_net2 = GET_IMAGE_G(g)
        self.h_net3 = NEXT_STAGE_G(g, e, cfg.GAN.R_NUM)
        self.img_net3 = GET_IMAGE_G(g)

    def forward(self, z, sent, words, mask):
        c, mu, logvar = self.ca_net(sent)
        h = self.h_net1(z, c)
        fakes, atts = [self.img_net1(h)], []
        for net, img in ((self.h_net2, self.img_net2), (self.h_net3, self.img_net3)):
            h, att = net(h, c, words, mask)
            fakes.append(img(h))
            atts.append(att)
        return fakes, atts, mu, logvar


def downBlock_(i, o):
    return nn.Sequential(nn.Conv2d(i, o, 4, 2, 1, bias=False), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, inplace=True))


def Block3x3_leakRelu_(i, o):
    return nn.Sequential(conv3x3(i, o), nn.BatchNorm2d(o), nn.LeakyReLU(0.2, inplace=True))


def encode_image_by_16times_(ndf):
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        *[m for k in range(3) for m in (nn.Conv2d(ndf << k, ndf << (k + 1), 4, 2, 1, bias=False),
                                        nn.BatchNorm2d(ndf << (k + 1)), nn.LeakyReLU(0.2, inplace=True))])


class D_GET_LOGITS_(nn.Module):
    def __init__(self, ndf, nef, bcondition=False):
        super().__init__()
        self.df_dim, self.ef_dim, self.bcondition = ndf, nef, bcondition
        if bcondition:
            self.jointConv = Block3x3_leakRelu_(ndf * 8 + nef, ndf * 8)
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def forward(self, h_code, c_code=None):
        if self.bcondition and c_code is not None:
            c_code = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 4, 4)
            h_code = self.jointConv(torch.cat((h_code, c_code), 1))
        return self.outlogits(h_code).view(-1)


class OriginalD128(nn.Module):
    def __init__(self, ndf, nef):
        super().__init__()
        self.img_code_s16 = encode_image_by_16times_(ndf)
        self.img_code_s32 = downBlock_(ndf * 8, ndf * 16)
        self.img_code_s32_1 = Block3x3_leakRelu_(ndf * 16, ndf * 8)
        self.UNCOND_DNET = D_GET_LOGITS_(ndf, nef, bcondition=False)
        self.COND_DNET = D_GET_LOGITS_(ndf, nef, bcondition=True)

    def forward(self, x):
        return self.img_code_s32_1(self.img_code_s32(self.img_code_s16(x)))


# ---------------------------------------------------------------------------------------- tests

CFG = config.load("bird_attn2", **{"GAN.GF_DIM": 4, "GAN.Z_DIM": 6, "GAN.CONDITION_DIM": 5,
                                   "TEXT.EMBEDDING_DIM": 7, "GAN.R_NUM": 2})


def original_generator() -> OriginalG:
    """The mirror, loaded (strictly) with the weights of an attngan_fast G_NET."""
    torch.manual_seed(0)
    ours = G_NET(CFG)
    for m in ours.modules():  # non-trivial BatchNorm parameters and running statistics
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for t in (m.weight, m.bias, m.running_mean):
                t.data.uniform_(-0.5, 0.5)
            m.running_var.data.uniform_(0.5, 1.5)
    model = OriginalG(CFG)
    model.load_state_dict(ours.state_dict(), strict=True)
    return model


def inputs(lens: list[int], dtype: torch.dtype = torch.float32):
    b, t = len(lens), max(lens)
    g = torch.Generator().manual_seed(1)
    mask = torch.arange(t).unsqueeze(0) >= torch.tensor(lens).unsqueeze(1)
    words = torch.randn(b, CFG.TEXT.EMBEDDING_DIM, t, generator=g).masked_fill(mask.unsqueeze(1), 0.0)
    return (torch.randn(b, CFG.GAN.Z_DIM, generator=g).to(dtype),
            torch.randn(b, CFG.TEXT.EMBEDDING_DIM, generator=g).to(dtype), words.to(dtype), mask)


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Within TOLERANCES[dtype] of the tensor's largest magnitude: whole-model gradients go through
    three stages of train-mode BatchNorm at batch 2-3, which amplify summation-order differences."""
    atol, rtol = TOLERANCES[expected.dtype]
    scale = max(expected.abs().max().item(), 1.0)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale, msg=lambda m: f"{name}: {m}")


def run(model: nn.Module, args) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs of one forward (CA noise from a fixed seed) and the gradients of all parameters."""
    torch.manual_seed(2)
    fakes, atts, mu, logvar = model(*args)
    outs = [*fakes, *atts, mu, logvar]
    loss = sum((o.double() * torch.linspace(-1, 1, o.numel(), dtype=torch.float64).view_as(o)).sum() for o in outs)
    loss.backward()
    return outs, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("mask_mode,lens,mode,dtype", [
    ("original", [5, 2], "train", torch.float64), ("per_sample", [3, 3], "eval", torch.float64),
    ("per_sample", [4, 4], "train", torch.float32),
    ("per_sample", [6], "eval", torch.float32),  # batch 1 (BatchNorm1d cannot train on it)
])
def test_accelerated_original_generator_equals_the_original(mode, mask_mode, lens, dtype):
    original = original_generator().to(dtype).train(mode == "train")
    fast, report = attngan_fast.accelerate(copy.deepcopy(original), mask_mode=mask_mode)
    assert fast is not original and isinstance(fast, OriginalG)
    assert report.counts() == {"GLU": 2, "UpBlock": 6, "ResBlock": 4, "GlobalAttentionGeneral": 2, "GET_IMAGE_G": 3}, \
        str(report)
    assert not report.skipped
    assert isinstance(fast.h_net3.residual[1], attngan_fast.models.ResBlock)
    assert fast.h_net2.att.mask_mode == mask_mode and fast.training == (mode == "train")
    before = fast.state_dict()
    assert list(before) == list(original.state_dict())
    for k, v in original.state_dict().items():
        assert torch.equal(before[k], v), k

    args = inputs(lens, dtype)
    with attngan_fast.backend("reference"):
        ref_out, ref_grads = run(original, args)
    with attngan_fast.backend("fast"):
        out, grads = run(fast, args)
    pairs = [(f"output {i}", a, b) for i, (a, b) in enumerate(zip(out, ref_out))]
    pairs += [(f"grad {n}", grads[n], g) for n, g in ref_grads.items()]
    pairs += [(n, fast.state_dict()[n].float(), b.float()) for n, b in original.state_dict().items()]
    if dtype == torch.float64:
        for name, a, b in pairs:
            assert_close_scaled(a, b, name)
        return
    # float32: as close to the float64 original as the float32 original is (the BatchNorms at batch
    # 1-2 amplify summation-order differences well past 1e-5 in the deepest gradients)
    exact = copy.deepcopy(original).double()
    exact.load_state_dict(original_generator().train(mode == "train").state_dict())
    with attngan_fast.backend("reference"):
        exact_out, exact_grads = run(exact, inputs(lens, torch.float64))
    exact_all = [*exact_out, *exact_grads.values(), *exact.state_dict().values()]
    for (name, a, b), e in zip(pairs, exact_all):
        assert_low_precision_ok(a, b, e.to(b.dtype if b.is_floating_point() else e.dtype), name=name,
                                factor=4.0, atol=1e-6 * max(e.abs().max().item(), 1.0))


def test_fused_ops_run_after_accelerate(monkeypatch):
    fast, _ = attngan_fast.accelerate(original_generator().eval(), mask_mode="per_sample")
    seen = set()

    def spy(owner, name):
        fn = getattr(owner, name)
        monkeypatch.setattr(owner, name, lambda *a, **k: (seen.add(name), fn(*a, **k))[1])

    spy(attngan_fast.models.blocks, "up_block")
    spy(attngan_fast.models.blocks, "res_block")
    spy(attngan_fast.ops, "word_region_attention")
    with torch.no_grad(), attngan_fast.backend("fast"):
        fast(*inputs([3, 3]))
    assert seen == {"up_block", "res_block", "word_region_attention"}


def test_unrecognised_modules_are_left_alone():
    class NotGLU(nn.Module):  # named GLU, gates the other half
        def forward(self, x):
            nc = x.size(1) // 2
            return torch.sigmoid(x[:, :nc]) * x[:, nc:]

    NotGLU.__name__ = "GLU"

    class ReluResBlock(ResBlock):  # ReLU after the sum: not the AttnGAN ResBlock
        def forward(self, x):
            return F.relu(super().forward(x))

    hooked = upBlock(4, 2)
    hooked.register_forward_hook(lambda *a: None)
    model = nn.Sequential(
        nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), conv3x3(4, 8), nn.BatchNorm2d(8), GLU()),
        nn.Sequential(conv3x3(4, 8), nn.BatchNorm2d(8), NotGLU()),
        ReluResBlock(4),
        hooked,
        nn.GLU(dim=-1),
    )
    names = [type(m).__name__ for m in model.modules()]
    model, report = attngan_fast.accelerate(model)
    assert [type(m).__name__ for m in model.modules()] == names
    # the GLUs inside (same behaviour), not their parents
    assert report.counts() == {"GLU": 3} and {name for name, _, _ in report.swapped} == {"0.3", "2.block.2", "3.3"}
    assert dict(report.skipped) == {"2": "output is not block(x) + x",
                                    "3": "has hooks (a fused forward would not call them)"}
    assert "skipped 2" in str(report)


def test_shared_modules_stay_shared_and_the_root_can_be_swapped():
    block = upBlock(4, 2)
    model = nn.ModuleDict({"a": block, "b": block})
    model, report = attngan_fast.accelerate(model)
    assert model["a"] is model["b"] and isinstance(model["a"], attngan_fast.models.UpBlock)
    assert len(report.swapped) == 1
    root, report = attngan_fast.accelerate(ResBlock(4))
    assert isinstance(root, attngan_fast.models.ResBlock) and report.swapped[0][0] == "<model>"


def test_accelerate_keeps_attngan_fast_models_and_the_discriminator():
    for model in (G_NET(CFG), D_NET128(CFG)):
        keys = list(model.state_dict())
        same, report = attngan_fast.accelerate(model)
        assert same is model and list(same.state_dict()) == keys and not report.swapped, str(report)


def test_accelerate_bad_arguments():
    with pytest.raises(ValueError, match="mask_mode"):
        attngan_fast.accelerate(nn.Linear(2, 2), mask_mode="batch")
    with pytest.raises(TypeError, match="model"):
        attngan_fast.accelerate(lambda x: x)
    with pytest.raises(ValueError, match="GAMMA3"):
        attngan_fast.accelerate_losses(SimpleNamespace(TRAIN=SimpleNamespace(SMOOTH=SimpleNamespace(GAMMA1=4.0,
                                                                                                     GAMMA2=5.0))))


def test_accelerate_losses_match_the_reference_with_an_easydict_like_cfg():
    smooth = SimpleNamespace(GAMMA1=4.0, GAMMA2=5.0, GAMMA3=10.0, LAMBDA=5.0)
    cfg = SimpleNamespace(TRAIN=SimpleNamespace(SMOOTH=smooth))
    words_loss, sent_loss = attngan_fast.accelerate_losses(cfg)
    b, d, t = 5, 9, 6
    g = torch.Generator().manual_seed(3)
    regions = torch.randn(b, d, 5, 5, generator=g, requires_grad=True)
    words = torch.randn(b, d, t, generator=g, requires_grad=True)
    cnn, rnn = (torch.randn(b, d, generator=g, requires_grad=True) for _ in range(2))
    cap_lens, labels = torch.tensor([6, 6, 4, 2, 1]), torch.arange(b)
    class_ids = [3, 1, 3, 2, 1]
    fast_w = words_loss(regions, words, labels, cap_lens, class_ids, b)
    fast_s = sent_loss(cnn, rnn, labels, class_ids, b)
    ref_w = losses.words_loss(regions, words, labels, cap_lens, class_ids, b, cfg)
    ref_s = losses.sent_loss(cnn, rnn, labels, class_ids, b, cfg)
    for a, r in zip([*fast_w[:2], *fast_s], [*ref_w[:2], *ref_s]):
        assert_close(a, r)
    for a, r in zip(fast_w[2], ref_w[2]):
        assert_close(a, r)
    ins = [regions, words, cnn, rnn]
    fast_g = torch.autograd.grad(sum(fast_w[:2]) + sum(fast_s), ins)
    ref_g = torch.autograd.grad(sum(ref_w[:2]) + sum(ref_s), ins)
    for a, r in zip(fast_g, ref_g):
        assert_close(a, r)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_accelerated_original_discriminator_equals_the_original(mode):
    """D_NET128 built the original way: its blocks and heads swapped; features, both heads and every
    parameter gradient as the original's (reference backend), running statistics too."""
    cfg = config.load("bird_attn2", **{"GAN.DF_DIM": 2, "TEXT.EMBEDDING_DIM": 7})
    torch.manual_seed(0)
    ours = D_NET128(cfg)
    for m in ours.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5), m.bias.data.uniform_(-0.5, 0.5), m.running_mean.data.uniform_(-0.5, 0.5)
            m.running_var.data.uniform_(0.5, 1.5)
    original = OriginalD128(2, 7)
    original.load_state_dict(ours.state_dict(), strict=True)
    original.train(mode == "train")
    fast, report = attngan_fast.accelerate(copy.deepcopy(original))
    expected = {"ImageEncoder16": 1, "DownBlock": 1, "Block3x3LeakRelu": 2, "D_GET_LOGITS": 2}
    assert report.counts() == expected, str(report)
    assert list(fast.state_dict()) == list(original.state_dict())
    x, c = torch.randn(3, 3, 128, 128), torch.randn(3, 7)
    results = []
    for model, name in ((original, "reference"), (fast, "fast")):
        with attngan_fast.backend(name):
            feats = model(x)
            outs = (feats, model.COND_DNET(feats, c), model.UNCOND_DNET(feats))
        sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}, model.state_dict()))
    (ref_outs, ref_grads, ref_sd), (outs, grads, sd) = results
    for i, (a, b) in enumerate(zip(outs, ref_outs)):
        assert_close_scaled(a, b, f"output {i}")
    for n, g in ref_grads.items():
        assert_close_scaled(grads[n], g, f"grad {n}")
    for n, b in ref_sd.items():
        assert_close_scaled(sd[n].float(), b.float(), n)


def test_fused_d_ops_run_after_accelerate(monkeypatch):
    monkeypatch.setattr(down_ops, "CPU_MAX_OUTPUT_PIXELS", 1 << 30)  # the kernel for every shape
    monkeypatch.setattr(down_ops, "CPU_MIN_MACS", 0)
    fast, _ = attngan_fast.accelerate(OriginalD128(2, 7).eval())
    seen = []
    real = attngan_fast.models.blocks.down_block
    monkeypatch.setattr(attngan_fast.models.blocks, "down_block", lambda *a, **k: (seen.append(1), real(*a, **k))[1])
    with torch.no_grad(), attngan_fast.backend("fast"):
        fast.COND_DNET(fast(torch.randn(2, 3, 128, 128)), torch.randn(2, 7))
    assert len(seen) == 4 + 1 + 1 + 1  # s16's four runs, s32, s32_1, the conditional head's jointConv
