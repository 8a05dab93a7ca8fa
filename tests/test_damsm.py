"""The fused DAMSM similarity op and the fused words/sent losses against the reference losses."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attngan_fast import backend, config, losses
from attngan_fast.losses import fused as damsm_losses
from attngan_fast.ops import damsm_word_similarity
from tests.kernel_checks import TOLERANCES, assert_close, assert_low_precision_ok

CFG = config.load("bird_attn2")  # GAMMA1 4, GAMMA2 5, GAMMA3 10
G1, G2 = CFG.TRAIN.SMOOTH.GAMMA1, CFG.TRAIN.SMOOTH.GAMMA2


def make_inputs(lens: list[int], D: int, T: int, H: int = 4, W: int = 5, dtype=torch.float32, grad: bool = True):
    """words (B, D, T) zero at padding, regions (B, D, H, W), cap_lens (B,) int64."""
    B = len(lens)
    words = torch.randn(B, D, T, dtype=dtype)
    pad = torch.arange(T) >= torch.tensor(lens).unsqueeze(1)
    words = words.masked_fill(pad.unsqueeze(1), 0.0).requires_grad_(grad)
    regions = torch.randn(B, D, H, W, dtype=dtype, requires_grad=grad)
    return words, torch.tensor(lens), regions


def reference_similarity(words, lens, regions):
    """sim (B, B) and the attention (B, T, H, W) from the reference loop (attngan_fast.losses)."""
    with backend("reference"):
        return damsm_word_similarity(words, lens, regions, G1, G2, need_attention=True)


def grads(out: torch.Tensor, inputs, seed: int = 1):
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, upstream)


# ---------------------------------------------------------------- the op (C++ on CPU)

OP_CASES = [  # lens, D, T, H, W
    ([3], 8, 3, 4, 5),  # B = 1
    ([1, 4], 5, 4, 3, 3),  # a one-word caption, odd D
    ([6, 1, 4, 6, 2, 5, 3], 13, 6, 2, 7),  # B = 7, mixed lengths incl. 1 and T
    ([18, 7, 12], 32, 20, 17, 17),  # T > max(len), the real 17 x 17 grid
    ([(7 * i) % 30 + 1 for i in range(24)], 6, 30, 3, 3),  # 373 word rows: several caption blocks in C++
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lens,D,T,H,W", OP_CASES)
def test_op_matches_reference(lens, D, T, H, W, dtype):
    words, cap_lens, regions = make_inputs(lens, D, T, H, W, dtype)
    sim, attn = damsm_word_similarity(words, cap_lens, regions, G1, G2, need_attention=True)
    sim_ref, attn_ref = reference_similarity(words, cap_lens, regions)
    assert sim.dtype == dtype and attn.dtype == dtype and attn.shape == (len(lens), T, H, W)
    assert_close(sim, sim_ref, dtype, "sim")
    assert_close(attn, attn_ref, dtype, "attn")
    for name, g, g_ref in zip(("words", "regions"), grads(sim, (words, regions)), grads(sim_ref, (words, regions))):
        assert_close(g, g_ref, dtype, f"grad {name}")
    assert damsm_word_similarity(words, cap_lens, regions, G1, G2)[1] is None


def test_op_gradcheck_float64():
    words, cap_lens, regions = make_inputs([3, 1, 2], 5, 3, 2, 3, torch.float64)
    assert torch.autograd.gradcheck(lambda w, r: damsm_word_similarity(w, cap_lens, r, G1, G2)[0], (words, regions))



def test_op_zero_word_takes_the_clamped_branch():
    """A zero word vector: |w||c| < eps, the cosine is 0 and its gradient c / eps (as the reference's clamp)."""
    words, cap_lens, regions = make_inputs([3, 1, 2], 5, 3, 2, 3, torch.float64)
    words = words.detach().clone()
    words[1, :, 0] = 0
    words.requires_grad_(True)
    sim, _ = damsm_word_similarity(words, cap_lens, regions, G1, G2)
    sim_ref, _ = reference_similarity(words, cap_lens, regions)
    assert_close(sim, sim_ref, torch.float64, "sim")
    for g, g_ref in zip(grads(sim, (words, regions)), grads(sim_ref, (words, regions))):
        assert_close(g, g_ref, torch.float64, "grad")


def test_opcheck():
    words, cap_lens, regions = make_inputs([3, 1, 2], 6, 4, 2, 3)
    op = torch.ops.attngan_fast.damsm_word_similarity.default
    for need_attention in (False, True):
        torch.library.opcheck(op, (words, cap_lens, regions, G1, G2, need_attention))
    torch.library.opcheck(op, (words.detach().double(), cap_lens.int(), regions.detach().double(), 2.0, 3.0, True))
    grad_sim = torch.randn(3, 3)
    torch.library.opcheck(torch.ops.attngan_fast.damsm_word_similarity_backward.default,
                          (grad_sim, words.detach(), cap_lens, regions.detach(), G1, G2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_op_low_precision(dtype):
    words, cap_lens, regions = make_inputs([7, 2, 5], 24, 8, 5, 5, torch.float64)
    exact = reference_similarity(words, cap_lens, regions)[0]
    exact_grads = grads(exact, (words, regions))
    w_lp, r_lp = (x.detach().to(dtype).requires_grad_(True) for x in (words, regions))
    sim, _ = damsm_word_similarity(w_lp, cap_lens, r_lp, G1, G2)
    plain = reference_similarity(w_lp, cap_lens, r_lp)[0]
    assert sim.dtype == torch.float32  # accumulated and returned in float32
    assert_low_precision_ok(sim, plain, exact, "sim")
    fast_grads = grads(sim.double(), (w_lp, r_lp))
    plain_grads = grads(plain.double(), (w_lp, r_lp))
    for name, g, p, e in zip(("words", "regions"), fast_grads, plain_grads, exact_grads):
        assert g.dtype == dtype
        assert_low_precision_ok(g, p, e, f"grad {name}")


def test_op_noncontiguous_inputs_and_int32_lengths():
    words, cap_lens, regions = make_inputs([4, 2, 3], 9, 5, 3, 4)
    words_t = words.detach().transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)  # (B, D, T), D innermost
    regions_cl = regions.detach().to(memory_format=torch.channels_last).requires_grad_(True)
    sim, _ = damsm_word_similarity(words_t, cap_lens.int(), regions_cl, G1, G2)
    sim_ref, _ = reference_similarity(words, cap_lens, regions)
    assert_close(sim, sim_ref, name="sim")
    for g, g_ref in zip(grads(sim, (words_t, regions_cl)), grads(sim_ref, (words, regions))):
        assert_close(g, g_ref, name="grad")


def test_op_backward_is_deterministic():
    words, cap_lens, regions = make_inputs([5, 3, 4, 1, 5], 16, 5, 6, 6)
    first = grads(damsm_word_similarity(words, cap_lens, regions, G1, G2)[0], (words, regions))
    second = grads(damsm_word_similarity(words, cap_lens, regions, G1, G2)[0], (words, regions))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_op_bad_input():
    words, cap_lens, regions = make_inputs([3, 2], 6, 3, 2, 2, grad=False)
    with pytest.raises(ValueError, match=r"cap_lens: expected values in \[1, T=3\], got cap_lens\[1\] = 4"):
        damsm_word_similarity(words, [3, 4], regions, G1, G2)
    with pytest.raises(ValueError, match=r"cap_lens: expected values in \[1, T=3\], got cap_lens\[0\] = 0"):
        damsm_word_similarity(words, torch.tensor([0, 2]), regions, G1, G2)  # checked by the C++ kernel
    with pytest.raises(ValueError, match="cap_lens: expected an int32 or int64 tensor, got torch.float32"):
        damsm_word_similarity(words, torch.tensor([3.0, 2.0]), regions, G1, G2)
    with pytest.raises(ValueError, match=r"cap_lens: expected \(2,\), got \(3,\)"):
        damsm_word_similarity(words, torch.tensor([3, 2, 1]), regions, G1, G2)
    with pytest.raises(ValueError, match=r"regions: expected \(B=2, D=6, H, W\), got \(2, 5, 2, 2\)"):
        damsm_word_similarity(words, cap_lens, regions[:, :5], G1, G2)
    with pytest.raises(ValueError, match=r"regions: expected \(B=2, D=6, H, W\), got \(1, 6, 2, 2\)"):
        damsm_word_similarity(words, cap_lens, regions[:1], G1, G2)
    with pytest.raises(ValueError, match=r"words: expected a non-empty \(B, D, T\), got \(2, 6\)"):
        damsm_word_similarity(words[:, :, 0], cap_lens, regions, G1, G2)
    with pytest.raises(TypeError, match="regions: expected dtype torch.float32 \\(that of words\\), got torch.float64"):
        damsm_word_similarity(words, cap_lens, regions.double(), G1, G2)
    with pytest.raises(ValueError, match=r"cap_lens: expected values in \[1, T=3\]"):  # the C++ check, op called directly
        torch.ops.attngan_fast.damsm_word_similarity(words, torch.tensor([3, 9]), regions, G1, G2, False)


# ---------------------------------------------------------------- the fused losses vs the reference losses

LOSS_CASES = [  # lens (T = max), class_ids
    ([4], None),
    ([5, 1], np.array([2, 2])),  # B = 2, the only negative masked
    ([6, 1, 4, 6, 2, 5, 3], np.array([1, 3, 1, 2, 3, 1, 4])),  # duplicates (numpy)
    ([6, 1, 4, 6, 2, 5, 3], [5, 5, 5, 5, 5, 5, 5]),  # one class: every negative masked (list)
    ([3, 3, 2, 1, 3, 2, 2], torch.tensor([0, 1, 2, 3, 4, 5, 6])),  # all distinct (tensor)
    ([6, 1, 4, 6, 2, 5, 3], None),
]


def loss_inputs(lens, dtype=torch.float64, D=12, H=4, W=3):
    B, T = len(lens), max(lens)
    words, cap_lens, img = make_inputs(lens, D, T, H, W, dtype)
    return img, words, cap_lens, torch.arange(B)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lens,class_ids", LOSS_CASES)
def test_words_loss_matches_reference(lens, class_ids, dtype):
    img, words, cap_lens, labels = loss_inputs(lens, dtype)
    B = len(lens)
    fast = damsm_losses.words_loss(img, words, labels, cap_lens, class_ids, B, CFG)
    ref = losses.words_loss(img, words, labels, cap_lens, class_ids, B, CFG)
    for name, a, b in (("loss0", fast[0], ref[0]), ("loss1", fast[1], ref[1])):
        assert torch.isfinite(a), name
        assert_close(a, b, dtype, name)
    assert len(fast[2]) == B
    for i, (a, b) in enumerate(zip(fast[2], ref[2])):
        assert a.shape == b.shape == (1, lens[i], 4, 3)
        assert_close(a, b, dtype, f"att_maps[{i}]")
    for name, g, g_ref in zip(("img_features", "words_emb"), torch.autograd.grad(fast[0] + 2 * fast[1], (img, words)),
                              torch.autograd.grad(ref[0] + 2 * ref[1], (img, words))):
        assert torch.isfinite(g).all(), name
        assert_close(g, g_ref, dtype, f"grad {name}")


@pytest.mark.parametrize("lens,class_ids", LOSS_CASES)
def test_sent_loss_matches_reference(lens, class_ids):
    B = len(lens)
    cnn, rnn = torch.randn(B, 10, requires_grad=True), torch.randn(B, 10, requires_grad=True)
    labels = torch.arange(B)
    fast = damsm_losses.sent_loss(cnn, rnn, labels, class_ids, B, CFG)
    ref = losses.sent_loss(cnn, rnn, labels, class_ids, B, CFG)
    for a, b in zip(fast, ref):
        assert_close(a, b, name="loss")
    for g, g_ref in zip(torch.autograd.grad(fast[0] + 2 * fast[1], (cnn, rnn)),
                        torch.autograd.grad(ref[0] + 2 * ref[1], (cnn, rnn))):
        assert torch.isfinite(g).all()
        assert_close(g, g_ref, name="grad")


def test_losses_without_labels_and_cap_lens_as_list():
    img, words, cap_lens, _ = loss_inputs([4, 2, 3])
    loss0, loss1, att_maps = damsm_losses.words_loss(img, words, None, [4, 2, 3], None, 3, CFG)
    ref_maps = losses.words_loss(img, words, None, [4, 2, 3], None, 3, CFG)[2]
    assert loss0 is None and loss1 is None
    for a, b in zip(att_maps, ref_maps):
        assert_close(a, b, torch.float64)
    assert damsm_losses.sent_loss(torch.randn(3, 5), torch.randn(3, 5), None, None, 3, CFG) == (None, None)
    loss0, loss1, att_maps = damsm_losses.words_loss(img, words, torch.arange(3), cap_lens, None, 3, CFG,
                                                     return_att_maps=False)
    assert att_maps == [] and torch.isfinite(loss0)


def test_losses_bad_input():
    img, words, cap_lens, labels = loss_inputs([4, 2, 3])
    with pytest.raises(ValueError, match=r"words_emb: expected \(3, D=12, T\), got \(3, 11, 4\)"):
        damsm_losses.words_loss(img, words[:, :11], labels, cap_lens, None, 3, CFG)
    with pytest.raises(ValueError, match=r"img_features: expected \(3, D, H, W\), got \(2, 12, 4, 3\)"):
        damsm_losses.words_loss(img[:2], words, labels, cap_lens, None, 3, CFG)
    with pytest.raises(ValueError, match=r"cap_lens: expected values in \[1, T=4\], got cap_lens\[2\] = 5"):
        damsm_losses.words_loss(img, words, labels, [4, 2, 5], None, 3, CFG)
    with pytest.raises(ValueError, match=r"class_ids: expected \(3,\), got \(2,\)"):
        damsm_losses.words_loss(img, words, labels, cap_lens, [1, 2], 3, CFG)


def test_generator_loss_terms_fast_equals_reference():
    img, words, cap_lens, labels = loss_inputs([6, 1, 4, 6, 2], torch.float64)
    cnn, sent = torch.randn(5, 12, dtype=torch.float64), torch.randn(5, 12, dtype=torch.float64)
    ids = np.array([1, 2, 1, 3, 2])
    fast = losses.damsm_loss_terms(img, cnn, words, sent, labels, cap_lens, ids, CFG)
    with backend("reference"):
        ref = losses.damsm_loss_terms(img, cnn, words, sent, labels, cap_lens, ids, CFG)
    for a, b in zip(fast, ref):
        assert_close(a, b, torch.float64)
    g_fast = torch.autograd.grad(sum(fast), (img, words))
    g_ref = torch.autograd.grad(sum(ref), (img, words))
    for a, b in zip(g_fast, g_ref):
        assert_close(a, b, torch.float64)


def test_fast_losses_compile_fullgraph():
    img, words, cap_lens, labels = loss_inputs([5, 2, 4, 5], torch.float32)
    cnn, sent = torch.randn(4, 12, requires_grad=True), torch.randn(4, 12)
    ids = torch.tensor([1, 2, 1, 3])

    def total(img, words, cnn):
        w0, w1, s0, s1 = losses.damsm_loss_terms(img, cnn, words, sent, labels, cap_lens, ids, CFG)
        return w0 + w1 + s0 + s1

    torch._dynamo.reset()
    compiled = torch.compile(total, fullgraph=True, backend="aot_eager")
    out, expected = compiled(img, words, cnn), total(img, words, cnn)
    assert_close(out, expected, name="loss")
    for g, g_ref in zip(torch.autograd.grad(out, (img, words, cnn)), torch.autograd.grad(expected, (img, words, cnn))):
        assert_close(g, g_ref, name="grad")


def test_fast_words_loss_compiles_with_inductor():
    img, words, cap_lens, labels = loss_inputs([3, 1, 3], torch.float32, D=8)

    def loss(img, words):
        w0, w1, _ = damsm_losses.words_loss(img, words, labels, cap_lens, None, 3, CFG, return_att_maps=False)
        return w0 + w1

    torch._dynamo.reset()
    compiled = torch.compile(loss, fullgraph=True)
    assert_close(compiled(img, words), loss(img, words), name="loss")


# ---------------------------------------------------------------- the Triton kernels (interpreter on CPU, tiny shapes)

@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("lens,D,T,H,W", [([3], 5, 3, 2, 3), ([4, 1, 2], 7, 5, 3, 5), ([2, 3], 4, 3, 5, 7)])
def test_triton_kernels_match_cpu_op(lens, D, T, H, W, dtype):
    triton_damsm = pytest.importorskip("attngan_fast.kernels.damsm")
    words, cap_lens, regions = make_inputs(lens, D, T, H, W, torch.float32, grad=False)
    words, regions = words.to(dtype), regions.to(dtype)
    sim, attn = triton_damsm.damsm_word_similarity_forward(words, cap_lens, regions, G1, G2, True)
    sim_cpu, attn_cpu = torch.ops.attngan_fast.damsm_word_similarity(
        words.float(), cap_lens, regions.float(), G1, G2, True)
    assert sim.dtype == torch.float32 and attn.dtype == dtype
    atol, rtol = TOLERANCES[dtype] if dtype != torch.float32 else (1e-5, 1e-5)
    torch.testing.assert_close(sim, sim_cpu, atol=atol * 10, rtol=rtol)
    torch.testing.assert_close(attn.float(), attn_cpu, atol=atol, rtol=rtol)
    grad_sim = torch.randn(len(lens), len(lens))
    g_words, g_regions = triton_damsm.damsm_word_similarity_backward(grad_sim, words, cap_lens, regions, G1, G2)
    ref_words, ref_regions = torch.ops.attngan_fast.damsm_word_similarity_backward(
        grad_sim, words.float(), cap_lens, regions.float(), G1, G2)
    assert g_words.dtype == g_regions.dtype == dtype
    torch.testing.assert_close(g_words.float(), ref_words, atol=atol * 10, rtol=rtol * 10)
    torch.testing.assert_close(g_regions.float(), ref_regions, atol=atol * 10, rtol=rtol * 10)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_op_matches_cpu(dtype):
    words, cap_lens, regions = make_inputs([18, 1, 7, 12, 18], 256, 18, 17, 17, torch.float64, grad=False)
    exact = damsm_word_similarity(words, cap_lens, regions, G1, G2)[0]
    w, r = (x.to("cuda", dtype).requires_grad_(True) for x in (words, regions))
    sim, attn = damsm_word_similarity(w, cap_lens.cuda(), r, G1, G2, need_attention=True)
    torch.testing.assert_close(sim.double().cpu(), exact, atol=1e-3 if dtype == torch.float32 else 0.3, rtol=1e-3)
    sim.sum().backward()
    assert torch.isfinite(w.grad).all() and torch.isfinite(r.grad).all()
