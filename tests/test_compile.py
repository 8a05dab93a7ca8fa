"""Whole models under ``torch.compile(fullgraph=True)`` on the fast path.

G_NET (eval forward; train forward + backward), D_NET64/128/256 (features, conditional and
unconditional logits, forward + backward) and the DAMSM loss terms: no graph break, outputs,
gradients and BatchNorm running statistics equal to eager, and one compilation for every caption
length T <= WORDS_NUM (the T dims marked dynamic before the first call). The ops and single
blocks have their own compile tests (test_attention, test_blocks, test_damsm, test_models).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from torch._dynamo.testing import CompileCounterWithBackend
from torch._dynamo.utils import counters

import attngan_fast
from attngan_fast import config, losses
from attngan_fast.models import D_NET64, D_NET128, D_NET256, G_NET
from tests.kernel_checks import assert_close
from tests.training_helpers import make_trainer

pytestmark = pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")

WORDS_NUM = 9
LENGTHS = [9, 4, 6]  # the first call's caption lengths (T = 9); then other T <= WORDS_NUM
OTHER_LENGTHS = [[3, 2, 3], [7, 7, 1], [5, 9, 2]]


def tiny_cfg(**overrides) -> config.Config:
    """3 stages (64/128/256 px) with attention, narrow everywhere."""
    base = {"GAN.GF_DIM": 4, "GAN.DF_DIM": 2, "GAN.Z_DIM": 6, "GAN.CONDITION_DIM": 5, "GAN.R_NUM": 1,
            "TEXT.EMBEDDING_DIM": 8, "TEXT.WORDS_NUM": WORDS_NUM}
    return config.load("bird_attn2", **{**base, **overrides})


@pytest.fixture(autouse=True)
def _fast_fresh_dynamo():
    torch._dynamo.reset()
    # no on-disk caches (their keys do not cover the custom ops' schemas); a recompile is an error
    with attngan_fast.backend("fast"), torch._inductor.config.patch(force_disable_caches=True), \
            torch._dynamo.config.patch(error_on_recompile=True):
        yield
    torch._dynamo.reset()


def word_inputs(cfg: config.Config, lens: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """words (B, E, T) with zeros at padding (as the RNN gives) and mask (B, T), T = max(lens)."""
    T = max(lens)
    mask = torch.arange(T).unsqueeze(0) >= torch.tensor(lens).unsqueeze(1)
    words = torch.randn(len(lens), cfg.TEXT.EMBEDDING_DIM, T).masked_fill(mask.unsqueeze(1), 0.0)
    return words, mask


def mark_caption_dim(words: torch.Tensor, mask: torch.Tensor | None = None) -> None:
    """T dynamic in words (B, E, T) and mask (B, T): the first compiled call then serves every T."""
    torch._dynamo.mark_dynamic(words, 2)
    if mask is not None:
        torch._dynamo.mark_dynamic(mask, 1)


def g_inputs(cfg: config.Config, lens: list[int]) -> tuple[torch.Tensor, ...]:
    """z (B, Z), sent (B, E), words (B, E, T), mask (B, T), eps (B, C)."""
    B = len(lens)
    words, mask = word_inputs(cfg, lens)
    return torch.randn(B, cfg.GAN.Z_DIM), torch.randn(B, cfg.TEXT.EMBEDDING_DIM), words, mask, \
        torch.randn(B, cfg.GAN.CONDITION_DIM)


def assert_all_close(actual, expected, name: str) -> None:
    assert len(actual) == len(expected), name
    for i, (a, b) in enumerate(zip(actual, expected)):
        assert_close(a, b, name=f"{name}[{i}]")


def assert_state_close(model: nn.Module, ref: nn.Module) -> None:
    """Same gradients on every parameter and the same buffers (BatchNorm running statistics)."""
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        assert (p.grad is None) == (p_ref.grad is None), name
        if p.grad is not None:
            assert_close(p.grad, p_ref.grad, name=f"{name}.grad")
    for (name, b), b_ref in zip(model.named_buffers(), ref.buffers()):
        if b.is_floating_point():
            assert_close(b, b_ref, name=name)
        else:
            assert torch.equal(b, b_ref), name


# ----------------------------------------------------------------------------- generator


def test_generator_eval_one_graph_for_every_caption_length():
    cfg = tiny_cfg()
    G = G_NET(cfg).eval()
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(G, backend=counter, fullgraph=True)
    for i, lens in enumerate([LENGTHS, *OTHER_LENGTHS]):
        inputs = g_inputs(cfg, lens)
        if i == 0:
            mark_caption_dim(inputs[2], inputs[3])
        with torch.no_grad():
            fake, att, mu, logvar = compiled(*inputs)
            ref_fake, ref_att, ref_mu, ref_logvar = G(*inputs)
        assert [a.shape[1] for a in att] == [max(lens)] * 2
        assert_all_close(fake + att + [mu, logvar], ref_fake + ref_att + [ref_mu, ref_logvar], f"T={max(lens)}")
    assert counter.frame_count == 1


def test_generator_train_forward_backward():
    cfg = tiny_cfg()
    G = G_NET(cfg).train()
    ref = copy.deepcopy(G)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(G, backend=counter, fullgraph=True)
    for i, lens in enumerate([LENGTHS, OTHER_LENGTHS[0]]):
        z, sent, words, mask, eps = g_inputs(cfg, lens)
        outs, ref_outs = [], []
        for model, out in ((compiled, outs), (ref, ref_outs)):
            s, w = sent.clone().requires_grad_(), words.clone().requires_grad_()
            if i == 0 and model is compiled:
                mark_caption_dim(w, mask)
            fake, att, mu, logvar = model(z, s, w, mask, eps)
            # every output takes part: images, attention maps and the KL terms
            loss = sum((f * torch.linspace(-1, 1, f.numel()).view_as(f)).sum() for f in fake) \
                + sum(a.square().sum() for a in att) + losses.KL_loss(mu, logvar)
            loss.backward()
            out += [*fake, *att, mu, logvar, s.grad, w.grad]
        assert_all_close(outs, ref_outs, f"T={max(lens)}")
        assert_state_close(G, ref)
        G.zero_grad()
        ref.zero_grad()
    assert counter.frame_count == 1


def test_generator_eval_inductor():
    cfg = tiny_cfg()
    G = G_NET(cfg).eval()
    inputs = g_inputs(cfg, LENGTHS)
    with torch.no_grad():
        fake, att, _, _ = torch.compile(G, fullgraph=True)(*inputs)
        ref_fake, ref_att, _, _ = G(*inputs)
    assert_all_close(fake + att, ref_fake + ref_att, "inductor")


# ----------------------------------------------------------------------------- discriminators


@pytest.mark.parametrize("b_jcu", [True, False])
@pytest.mark.parametrize(("cls", "size"), [(D_NET64, 64), (D_NET128, 128), (D_NET256, 256)])
def test_discriminator_forward_backward(cls, size, b_jcu):
    cfg = tiny_cfg()
    D = cls(cfg, b_jcu=b_jcu).train()
    ref = copy.deepcopy(D)

    def logits(netD: nn.Module, x: torch.Tensor, sent: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x (B, 3, S, S), sent (B, E) -> conditional (B,), [unconditional (B,)] probabilities."""
        features = netD(x)
        cond = netD.COND_DNET(features, sent)
        return (cond,) if netD.UNCOND_DNET is None else (cond, netD.UNCOND_DNET(features))

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(logits, backend=counter, fullgraph=True)
    x, sent = torch.rand(3, 3, size, size) * 2 - 1, torch.randn(3, cfg.TEXT.EMBEDDING_DIM)
    results = []
    for fn, netD in ((compiled, D), (logits, ref)):
        xx, ss = x.clone().requires_grad_(), sent.clone().requires_grad_()
        probs = fn(netD, xx, ss)
        sum(nn.functional.binary_cross_entropy(p, torch.ones_like(p)) for p in probs).backward()
        results.append([*probs, xx.grad, ss.grad])
    assert len(results[0]) == (4 if b_jcu else 3)
    assert_all_close(*results, cls.__name__)
    assert_state_close(D, ref)
    assert counter.frame_count == 1


# ----------------------------------------------------------------------------- DAMSM loss


def test_damsm_loss_one_graph_for_every_caption_length():
    cfg = tiny_cfg()
    E, B = cfg.TEXT.EMBEDDING_DIM, len(LENGTHS)
    labels, class_ids = torch.arange(B), torch.tensor([1, 2, 1])

    def total(regions, cnn_code, words, sent, cap_lens):
        w0, w1, s0, s1 = losses.damsm_loss_terms(regions, cnn_code, words, sent, labels, cap_lens, class_ids, cfg)
        return (w0 + w1) * 2.0 + s0 + s1

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(total, backend=counter, fullgraph=True)
    regions, cnn_code, sent = torch.randn(B, E, 5, 5), torch.randn(B, E), torch.randn(B, E)
    for i, lens in enumerate([LENGTHS, *OTHER_LENGTHS]):
        words, _ = word_inputs(cfg, lens)
        results = []
        for fn in (compiled, total):
            args = [t.clone().requires_grad_() for t in (regions, cnn_code, words, sent)]
            if i == 0 and fn is compiled:
                mark_caption_dim(args[2])
            loss = fn(*args, torch.tensor(lens))
            loss.backward()
            results.append([loss, *(a.grad for a in args)])
        assert_all_close(*results, f"T={max(lens)}")
    assert counter.frame_count == 1


# ----------------------------------------------------------------------------- training


def test_trainer_compile_one_graph_for_every_caption_length(tmp_path):
    """GANTrainer(compile=...) marks T dynamic: steps on batches of other longest-caption lengths
    compile nothing new."""
    trainer = make_trainer(tmp_path, compile="aot_eager")
    by_width = {int(b[0].cap_lens.max()): b for b in trainer._loader(0)}
    assert len(by_width) >= 2
    first, *others = by_width.values()
    with torch._dynamo.config.patch(error_on_recompile=False):
        trainer.train_step(first)  # compiles G, every D and its heads (D again with frozen parameters for G's loss)
    graphs = counters["stats"]["unique_graphs"]
    for batch in others:
        logs = trainer.train_step(batch)
        assert all(torch.isfinite(v) for v in logs.values())
    assert counters["stats"]["unique_graphs"] == graphs
