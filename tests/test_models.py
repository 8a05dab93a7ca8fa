"""The reference models: checkpoint layout against the spec files, shapes, masks, determinism."""
from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attngan_fast import backend, config
from attngan_fast.models import (
    CA_NET,
    CNN_ENCODER,
    D_NET64,
    D_NET128,
    D_NET256,
    G_DCGAN,
    G_NET,
    GLU,
    INCEPTION_BLOCKS,
    RNN_ENCODER,
    Block3x3_relu,
    Block3x3Relu,
    GlobalAttentionGeneral,
    ResBlock,
    UpBlock,
    upBlock,
    weights_init,
    word_region_attention_reference,
)

SPEC = Path(__file__).parent / "data" / "spec"
# spec file -> (config name, vocabulary size of its text encoder)
SPEC_CONFIGS = {
    "shapes_birds.txt": ("bird_attn2", 5450),
    "shapes_birds_eval.txt": ("eval_bird", 5450),
    "shapes_birds_dcgan.txt": ("bird_attnDCGAN2", 5450),
    "shapes_coco.txt": ("coco_attn2", 27297),
}
HEADER = re.compile(r"## (\w+): (\d+) state_dict entries, (\d+) parameters")


def parse_spec(path: Path) -> dict[str, dict]:
    """Sections of a shapes_*.txt file: name -> {"entries", "params", "lines"} (or trace lines)."""
    sections: dict[str, dict] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            m = HEADER.match(line)
            name = m.group(1) if m else line[3:]
            current = sections[name] = {"lines": []}
            if m:
                current["entries"], current["params"] = int(m.group(2)), int(m.group(3))
        elif current is not None and not line.startswith("#"):
            current["lines"].append(line)
    return sections


def layout(module: nn.Module) -> list[str]:
    return [f"{k}\t{tuple(v.shape)}" for k, v in module.state_dict().items()]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_cfg(**overrides):
    """A tiny 3-stage config (64/128/256 px) for fast forward tests."""
    base = {"GAN.GF_DIM": 4, "GAN.DF_DIM": 4, "GAN.Z_DIM": 6, "GAN.CONDITION_DIM": 5,
            "TEXT.EMBEDDING_DIM": 8, "TEXT.WORDS_NUM": 7}
    return config.load("bird_attn2", **{**base, **overrides})


def g_inputs(cfg, batch: int, lens: list[int]):
    T = max(lens)
    z = torch.randn(batch, cfg.GAN.Z_DIM)
    sent = torch.randn(batch, cfg.TEXT.EMBEDDING_DIM)
    words = torch.randn(batch, cfg.TEXT.EMBEDDING_DIM, T)
    mask = torch.arange(T).unsqueeze(0) >= torch.tensor(lens).unsqueeze(1)
    words = words.masked_fill(mask.unsqueeze(1), 0.0)  # the RNN gives exact zeros at padding
    return z, sent, words, mask


# ----------------------------------------------------------------------------- checkpoint layout


@pytest.mark.parametrize("spec_file", sorted(SPEC_CONFIGS))
def test_state_dicts_match_spec(spec_file):
    cfg_name, ntoken = SPEC_CONFIGS[spec_file]
    cfg = config.load(cfg_name)
    spec = parse_spec(SPEC / spec_file)
    with torch.device("meta"):  # layout only: no memory, no init cost
        if cfg.GAN.B_DCGAN:
            models = {"G": G_DCGAN(cfg), "D256": D_NET256(cfg, b_jcu=False)}
        else:
            models = {"G": G_NET(cfg), "D64": D_NET64(cfg), "D128": D_NET128(cfg), "D256": D_NET256(cfg)}
        models["RNN_ENCODER"] = RNN_ENCODER(ntoken, cfg)
    assert set(models) == {name for name, sec in spec.items() if "entries" in sec}
    for name, model in models.items():
        assert layout(model) == spec[name]["lines"], name
        assert len(model.state_dict()) == spec[name]["entries"], name
        assert n_params(model) == spec[name]["params"], name


@pytest.fixture(scope="module")
def image_encoder():
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="randomly initialised"):
        return CNN_ENCODER(32).eval()


def test_cnn_encoder_layout(image_encoder):
    lines = (SPEC / "keys_image_encoder_nef32.txt").read_text().splitlines()
    expected = [line for line in lines if not line.startswith("#")]
    got = [f"{k}\t{tuple(v.shape)}\t{str(v.dtype).removeprefix('torch.')}"
           for k, v in image_encoder.state_dict().items()]
    assert got == expected
    assert len(got) == 567
    assert sum(v.numel() for v in image_encoder.state_dict().values()) == int(lines[-1].split(":")[1])
    trainable = {n for n, p in image_encoder.named_parameters() if p.requires_grad}
    assert trainable == {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"}


def test_cnn_encoder_forward(image_encoder):
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        features, code = image_encoder(x)
        image_encoder.align_corners = True
        features_ac, _ = image_encoder(x)
        image_encoder.align_corners = False
    assert features.shape == (1, 32, 17, 17) and code.shape == (1, 32)
    assert torch.isfinite(features).all() and torch.isfinite(code).all()
    assert not torch.equal(features, features_ac)  # the resize option is honoured
    with pytest.raises(ValueError, match=r"x: expected \(B, 3, H, W\)"):
        image_encoder(torch.zeros(1, 1, 64, 64))


def test_cnn_encoder_loads_torchvision_weights(tmp_path):
    from torchvision.models import inception_v3

    torch.manual_seed(1)
    reference = inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception_v3.pth"
    torch.save(reference.state_dict(), path)  # torchvision format, AuxLogits and fc included
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "randomly initialised" warning
        encoder = CNN_ENCODER(16, weights=path)
    for name in INCEPTION_BLOCKS:
        ours, theirs = getattr(encoder, name).state_dict(), getattr(reference, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs), name


# ----------------------------------------------------------------------------- blocks


def test_glu_equals_f_glu():
    x = torch.randn(3, 10, 4, 5)
    torch.testing.assert_close(GLU()(x), F.glu(x, dim=1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="even channel count"):
        GLU()(torch.randn(2, 3))


def test_block_subclasses_keep_original_children():
    up = upBlock(6, 4)
    assert type(up) is UpBlock and isinstance(up, nn.Sequential)
    assert [type(m) for m in up] == [nn.Upsample, nn.Conv2d, nn.BatchNorm2d, GLU]
    assert up[1].weight.shape == (8, 6, 3, 3) and up[1].bias is None
    assert up.eval()(torch.randn(2, 6, 5, 7)).shape == (2, 4, 10, 14)
    block = Block3x3_relu(6, 4)
    assert type(block) is Block3x3Relu and [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, GLU]
    res = ResBlock(4).eval()
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(res(x), res.block(x) + x)


# ----------------------------------------------------------------------------- generator


def trace_shapes(model: nn.Module, run) -> dict[str, tuple[str, str]]:
    """name -> (class names of the module's MRO, output shapes formatted as in the spec trace)."""
    def fmt(out):
        if isinstance(out, (tuple, list)):
            return "[" + ", ".join(str(tuple(o.shape)) for o in out) + "]"
        return str(tuple(out.shape))

    record: dict[str, tuple[str, str]] = {}
    handles = [
        m.register_forward_hook(
            lambda mod, args, out, name=name: record.__setitem__(
                name, (" ".join(c.__name__ for c in type(mod).__mro__), fmt(out))
            )
        )
        for name, m in model.named_modules() if name
    ]
    try:
        result = run()
    finally:
        for h in handles:
            h.remove()
    return record, result


@pytest.mark.parametrize(("spec_file", "batch"), [("shapes_birds.txt", 2), ("shapes_coco.txt", 1)])
def test_g_forward_matches_spec_trace(spec_file, batch):
    cfg = config.load(SPEC_CONFIGS[spec_file][0])
    T = cfg.TEXT.WORDS_NUM
    G = G_NET(cfg).eval()
    z, sent, words, mask = g_inputs(cfg, batch, [T] + [T - 3] * (batch - 1))
    # the trace lists every sub-module: the reference backend (the fused attention skips ``att.sm``,
    # the fused blocks their children)
    with torch.no_grad(), backend("reference"):
        record, (fake, att, mu, logvar) = trace_shapes(G, lambda: G(z, sent, words, mask))
    lines = parse_spec(SPEC / spec_file)[f"G forward trace (eval, B=2, T={T})"]["lines"]
    for line in lines[:-1]:
        name, rest = line.split(": ", 1)
        cls, shapes = rest.split(" -> ")
        # the trace has B=2; every leading dim scales with B (B*Q rows for the softmax)
        shapes = re.sub(r"\((\d+),", lambda m: f"({int(m.group(1)) * batch // 2},", shapes)
        classes, got = record[name]
        assert cls in classes.split(), line
        assert got == shapes, line
    assert [f.shape for f in fake] == [(batch, 3, s, s) for s in (64, 128, 256)]
    assert [a.shape for a in att] == [(batch, T, 64, 64), (batch, T, 128, 128)]
    assert mu.shape == logvar.shape == (batch, cfg.GAN.CONDITION_DIM)
    assert all(torch.isfinite(f).all() and f.abs().max() <= 1 for f in fake)
    # attention weights: a distribution over the caption's own words, 0 on padding
    for a in att:
        torch.testing.assert_close(a.sum(1), torch.ones_like(a.sum(1)))
        assert (a.masked_select(mask.view(batch, T, 1, 1).expand_as(a)) == 0).all()


def test_g_dcgan_forward():
    cfg = small_cfg(**{"GAN.B_DCGAN": True, "GAN.R_NUM": 0})
    G = G_DCGAN(cfg).eval()
    z, sent, words, mask = g_inputs(cfg, 2, [5, 3])
    with torch.no_grad():
        fake, att, mu, _ = G(z, sent, words, mask)
    assert [f.shape for f in fake] == [(2, 3, 256, 256)]
    assert [a.shape for a in att] == [(2, 5, 64, 64), (2, 5, 128, 128)]
    assert len(G.h_net2.residual) == 0


@pytest.mark.parametrize("branch_num", [1, 2])
def test_g_fewer_branches(branch_num):
    cfg = small_cfg(**{"TREE.BRANCH_NUM": branch_num})
    G = G_NET(cfg).eval()
    assert not hasattr(G, f"h_net{branch_num + 1}")
    with torch.no_grad():
        fake, att, _, _ = G(*g_inputs(cfg, 1, [4]))
    assert len(fake) == branch_num and len(att) == branch_num - 1


def test_ca_net_eps():
    cfg = small_cfg()
    ca = CA_NET(cfg)
    sent = torch.randn(3, cfg.TEXT.EMBEDDING_DIM)
    eps = torch.randn(3, cfg.GAN.CONDITION_DIM)
    c_code, mu, logvar = ca(sent, eps)
    torch.testing.assert_close(c_code, mu + eps * torch.exp(0.5 * logvar))
    torch.manual_seed(5)
    c1, _, _ = ca(sent)
    torch.manual_seed(5)
    torch.testing.assert_close(c1, mu + torch.randn(3, cfg.GAN.CONDITION_DIM) * torch.exp(0.5 * logvar))


def test_g_determinism_and_eps():
    cfg = small_cfg()
    G = G_NET(cfg).eval()
    inputs = g_inputs(cfg, 2, [7, 4])
    with torch.no_grad():
        torch.manual_seed(3)
        a = G(*inputs)[0][-1]
        torch.manual_seed(3)
        b = G(*inputs)[0][-1]
        c = G(*inputs)[0][-1]  # new CA noise
        eps = torch.randn(2, cfg.GAN.CONDITION_DIM)
        d = G(*inputs, eps=eps)[0][-1]
        torch.manual_seed(9)
        e = G(*inputs, eps=eps)[0][-1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(d, e)
    torch.manual_seed(11)
    G1 = G_NET(cfg)
    torch.manual_seed(11)
    G2 = G_NET(cfg)
    assert all(torch.equal(p, q) for p, q in zip(G1.state_dict().values(), G2.state_dict().values()))


def test_state_dict_round_trip():
    cfg = small_cfg()
    torch.manual_seed(1)
    G, D, E = G_NET(cfg), D_NET64(cfg), RNN_ENCODER(30, cfg)
    for model in (G, D):
        model.apply(weights_init)
    buffer = io.BytesIO()
    torch.save({"G": G.state_dict(), "D": D.state_dict(), "E": E.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    torch.manual_seed(2)
    G2, D2, E2 = G_NET(cfg), D_NET64(cfg), RNN_ENCODER(30, cfg)
    for model, key in ((G2, "G"), (D2, "D"), (E2, "E")):
        model.load_state_dict(state[key], strict=True)
    inputs = g_inputs(cfg, 2, [7, 4])
    eps = torch.randn(2, cfg.GAN.CONDITION_DIM)
    captions = torch.randint(1, 30, (2, 6))
    with torch.no_grad():
        for a, b in zip(G.eval()(*inputs, eps=eps)[0], G2.eval()(*inputs, eps=eps)[0]):
            assert torch.equal(a, b)
        x = torch.rand(2, 3, 64, 64)
        assert torch.equal(D.eval()(x), D2.eval()(x))
        for a, b in zip(E.eval()(captions, [6, 3], None), E2.eval()(captions, [6, 3], None)):
            assert torch.equal(a, b)


def test_g_bad_shapes():
    cfg = config.load("bird_attn2", **{"GAN.GF_DIM": 4})
    G = G_NET(cfg).eval()
    z, sent, words, mask = g_inputs(cfg, 2, [5, 3])
    with pytest.raises(ValueError, match=re.escape("word_embs: expected (B=2, 256, T), got (2, 128, 5)")):
        G(z, sent, torch.zeros(2, 128, 5), mask)
    with pytest.raises(ValueError, match=re.escape("z_code: expected (B, 100), got (2, 99)")):
        G(z[:, :99], sent, words, mask)
    with pytest.raises(ValueError, match=re.escape("sent_emb: expected (B=2, 256), got (3, 256)")):
        G(z, torch.zeros(3, 256), words, mask)
    with pytest.raises(ValueError, match=re.escape("mask: expected (B=2, T=5), got (2, 4)")):
        G(z, sent, words, mask[:, :4])
    with pytest.raises(ValueError, match=re.escape("eps: expected (B=2, 100), got (2, 3)")):
        G(z, sent, words, mask, eps=torch.zeros(2, 3))


def test_g_traces_with_torch_compile():
    """The shape checks and both mask modes trace into one graph (Dynamo only, eager backend)."""
    for mode in ("per_sample", "original"):
        cfg = small_cfg(**{"GAN.MASK_MODE": mode, "TREE.BRANCH_NUM": 2})
        G = G_NET(cfg).eval()
        inputs = g_inputs(cfg, 2, [7, 4])
        eps = torch.randn(2, cfg.GAN.CONDITION_DIM)
        with torch.no_grad():
            fake, att, _, _ = torch.compile(G, backend="eager", fullgraph=True)(*inputs, eps=eps)
            ref_fake, ref_att, _, _ = G(*inputs, eps=eps)
        for a, b in zip(fake + att, ref_fake + ref_att):
            assert torch.equal(a, b)


# ----------------------------------------------------------------------------- discriminators


@pytest.mark.parametrize(("cls", "size"), [(D_NET64, 64), (D_NET128, 128), (D_NET256, 256)])
@pytest.mark.parametrize("b_jcu", [True, False])
def test_d_forward(cls, size, b_jcu):
    cfg = small_cfg()
    D = cls(cfg, b_jcu=b_jcu).eval()
    with torch.no_grad():
        features = D(torch.rand(2, 3, size, size) * 2 - 1)
        assert features.shape == (2, 8 * cfg.GAN.DF_DIM, 4, 4)
        cond = D.COND_DNET(features, torch.randn(2, cfg.TEXT.EMBEDDING_DIM))
    assert cond.shape == (2,) and ((cond > 0) & (cond < 1)).all()  # probabilities
    if b_jcu:
        assert D.UNCOND_DNET(features).shape == (2,)
    else:
        assert D.UNCOND_DNET is None and not any(k.startswith("UNCOND") for k in D.state_dict())


def test_weights_init():
    cfg = small_cfg(**{"GAN.GF_DIM": 8})
    G, D = G_NET(cfg), D_NET64(cfg)
    out_bias = D.COND_DNET.outlogits[0].bias.detach().clone()
    G.apply(weights_init)
    D.apply(weights_init)
    assert torch.equal(D.COND_DNET.outlogits[0].bias, out_bias)  # conv biases untouched
    assert torch.equal(G.ca_net.fc.bias, torch.zeros_like(G.ca_net.fc.bias))
    bn = G.h_net1.fc[1]
    assert torch.equal(bn.bias, torch.zeros_like(bn.bias))
    assert abs(bn.weight.mean().item() - 1) < 0.01 and abs(bn.weight.std().item() - 0.02) < 0.005
    w = G.h_net2.att.conv_context.weight.flatten(1)  # (8, 8): orthogonal
    torch.testing.assert_close(w @ w.T, torch.eye(w.size(0)), atol=1e-5, rtol=0)
    w = G.h_net1.fc[0].weight  # (2048, 11): orthonormal columns
    torch.testing.assert_close(w.T @ w, torch.eye(w.size(1)), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- text encoder


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU"])
def test_rnn_encoder(rnn_type):
    cfg = small_cfg(RNN_TYPE=rnn_type)
    E = RNN_ENCODER(20, cfg, ninput=12).eval()
    lens = torch.tensor([6, 4, 1])
    captions = torch.randint(1, 20, (3, 8))
    captions[torch.arange(8).unsqueeze(0) >= lens.unsqueeze(1)] = 0
    with torch.no_grad():
        words, sent = E(captions, lens, E.init_hidden(3))
        words_u, sent_u = E(captions[[2, 0, 1]], lens[[2, 0, 1]], None)  # unsorted batch
    H = cfg.TEXT.EMBEDDING_DIM // 2
    assert words.shape == (3, 2 * H, 6) and sent.shape == (3, 2 * H)  # T = max(cap_lens)
    for b, n in enumerate(lens.tolist()):
        assert (words[b, :, n:] == 0).all()
        torch.testing.assert_close(sent[b, :H], words[b, :H, n - 1])  # forward state at last word
        torch.testing.assert_close(sent[b, H:], words[b, H:, 0])  # backward state at t = 0
    torch.testing.assert_close(words_u, words[[2, 0, 1]])
    torch.testing.assert_close(sent_u, sent[[2, 0, 1]])
    hidden = E.init_hidden(3)
    assert (hidden[0] if rnn_type == "LSTM" else hidden).shape == (2, 3, H)


# ----------------------------------------------------------------------------- attention


def per_sample_loop(h, words, mask):
    """Each sample alone, softmax over its own valid words only."""
    contexts, weights = [], []
    for b in range(h.size(0)):
        valid = ~mask[b]
        q = h[b].flatten(1).T  # (Q, C)
        w = torch.softmax(q @ words[b][:, valid], dim=1)  # (Q, n)
        full = torch.zeros(q.size(0), words.size(2))
        full[:, valid] = w
        contexts.append((words[b] @ full.T).view_as(h[b]))
        weights.append(full.T.reshape(words.size(2), *h.shape[2:]))
    return torch.stack(contexts), torch.stack(weights)


def original_loop(h, words, mask):
    """The original's mask.repeat(Q, 1): row r = b*Q + q uses the mask of sample r % B."""
    B, C, H, W = h.shape
    Q, T = H * W, words.size(2)
    logits = torch.bmm(h.view(B, C, Q).transpose(1, 2), words).reshape(B * Q, T)
    rows = torch.arange(B * Q) % B
    logits[mask[rows]] = float("-inf")
    weights = torch.softmax(logits, dim=1).view(B, Q, T).transpose(1, 2)
    return torch.bmm(words, weights).view(B, C, H, W), weights.reshape(B, T, H, W)


def lengths_mask(lens, T):
    return torch.arange(T).unsqueeze(0) >= torch.tensor(lens).unsqueeze(1)


@pytest.mark.parametrize("shape", [(3, 6, 5, 7), (2, 4, 1, 1), (1, 3, 2, 2)])
def test_attention_modes_against_loops(shape):
    B, C, H, W = shape
    T = 5
    h, words = torch.randn(B, C, H, W), torch.randn(B, C, T)
    mask = lengths_mask([5, 2, 3][:B], T)
    words = words.masked_fill(mask.unsqueeze(1), 0.0)
    for mode, loop in (("per_sample", per_sample_loop), ("original", original_loop)):
        ctx, att = word_region_attention_reference(h, words, mask, mode)
        ref_ctx, ref_att = loop(h, words, mask)
        torch.testing.assert_close(ctx, ref_ctx)
        torch.testing.assert_close(att, ref_att)
    ctx, att = word_region_attention_reference(h, words, None)
    torch.testing.assert_close(ctx, per_sample_loop(h, words, torch.zeros(B, T, dtype=torch.bool))[0])


def test_attention_modes_agree_and_differ():
    h, words = torch.randn(3, 4, 3, 5), torch.randn(3, 4, 6)
    single = lengths_mask([4], 6)
    equal = lengths_mask([4, 4, 4], 6)
    mixed = lengths_mask([6, 2, 4], 6)
    for m, hh, ww in ((single, h[:1], words[:1]), (equal, h, words)):
        a = word_region_attention_reference(hh, ww, m, "per_sample")
        b = word_region_attention_reference(hh, ww, m, "original")
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    a = word_region_attention_reference(h, words, mixed, "per_sample")
    b = word_region_attention_reference(h, words, mixed, "original")
    assert not torch.allclose(a[1], b[1])
    # uint8 masks (the original's dtype) behave as bool
    c = word_region_attention_reference(h, words, mixed.to(torch.uint8), "per_sample")
    assert torch.equal(a[1], c[1])


def test_attention_all_masked_rule():
    h = torch.randn(3, 4, 2, 3, requires_grad=True)
    words = torch.randn(3, 4, 5, requires_grad=True)
    mask = lengths_mask([5, 0, 2], 5)  # sample 1: every word masked
    ctx, att = word_region_attention_reference(h, words, mask)
    assert torch.isfinite(ctx).all() and torch.isfinite(att).all()
    assert (att[1] == 0).all() and (ctx[1] == 0).all()
    for b in (0, 2):  # the others are unaffected
        alone = word_region_attention_reference(h[b : b + 1], words[b : b + 1], mask[b : b + 1])
        torch.testing.assert_close(ctx[b : b + 1], alone[0])
        torch.testing.assert_close(att[b : b + 1], alone[1])
    (ctx.sum() + att.sum()).backward()
    assert torch.isfinite(h.grad).all() and torch.isfinite(words.grad).all()
    assert (h.grad[1] == 0).all() and (words.grad[1] == 0).all()
    # the original mode keeps the original's NaN
    ctx_o, _ = word_region_attention_reference(h.detach()[1:2], words.detach()[1:2], mask[1:2], "original")
    assert torch.isnan(ctx_o).all()


def test_global_attention_module():
    cfg = small_cfg(**{"GAN.MASK_MODE": "original"})
    G = G_NET(cfg)
    assert G.h_net2.att.mask_mode == G.h_net3.att.mask_mode == "original"
    assert G_NET(small_cfg()).h_net2.att.mask_mode == "per_sample"
    att = GlobalAttentionGeneral(6, 8)
    assert att.mask_mode == "per_sample" and isinstance(att.sm, nn.Softmax) and att.sm.dim == 1
    h, context = torch.randn(2, 6, 3, 4), torch.randn(2, 8, 5)
    mask = lengths_mask([5, 3], 5)
    att.applyMask(mask)
    assert att.mask is mask
    out = att(h, context)
    words = F.conv2d(context.unsqueeze(3), att.conv_context.weight).squeeze(3)
    ref = word_region_attention_reference(h, words, mask)
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1], ref[1])
    with pytest.raises(ValueError, match=re.escape("input: expected (B, 6, H, W), got (2, 5, 3, 4)")):
        att(torch.randn(2, 5, 3, 4), context)
    with pytest.raises(ValueError, match=re.escape("context: expected (B=2, 8, T), got (3, 8, 5)")):
        att(h, torch.randn(3, 8, 5))
    with pytest.raises(ValueError, match=re.escape("mask: expected (B=2, T=4), got (2, 5)")):
        att(h, torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="mask_mode"):
        GlobalAttentionGeneral(6, 8, mask_mode="bogus")
