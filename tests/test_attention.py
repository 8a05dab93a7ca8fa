"""The fused word-region attention op: C++ (CPU) and Triton kernels against the reference.

The reference is :func:`attngan_fast.reference.word_region_attention` with
per-sample masking. Triton kernels run in the interpreter on a CPU-only machine (tiny shapes),
on the GPU where there is one.
"""
from __future__ import annotations

import re
import warnings

import pytest
import torch

from attngan_fast import backend, config
from attngan_fast.models import NEXT_STAGE_G, GlobalAttentionGeneral
from attngan_fast.ops import dispatch, word_region_attention
from attngan_fast.reference import word_region_attention as word_region_attention_reference
from tests.kernel_checks import assert_close, assert_low_precision_ok

OP = torch.ops.attngan_fast.word_region_attention
OP_BACKWARD = torch.ops.attngan_fast.word_region_attention_backward
TRITON_DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: Triton's interpreter


def make_inputs(B, C, H, W, T, lens=None, dtype=torch.float32, device="cpu"):
    """h (B, C, H, W), words (B, C, T), mask (B, T) from caption lengths (default: mixed, first full)."""
    if lens is None:
        lens = [T] + [(T * (b + 1)) // (B + 1) for b in range(1, B)]
    h = torch.randn(B, C, H, W, dtype=dtype, device=device)
    words = torch.randn(B, C, T, dtype=dtype, device=device)
    mask = torch.arange(T, device=device).unsqueeze(0) >= torch.tensor(lens, device=device).unsqueeze(1)
    return h, words, mask


def reference_with_grads(h, words, mask, grad_ctx, grad_weights=None):
    """context, weights, grad_h, grad_words of the reference for the given output gradients."""
    h = h.detach().requires_grad_()
    words = words.detach().requires_grad_()
    ctx, weights = word_region_attention_reference(h, words, mask)
    loss = (ctx * grad_ctx).sum()
    if grad_weights is not None:
        loss = loss + (weights * grad_weights).sum()
    grad_h, grad_words = torch.autograd.grad(loss, (h, words))
    return ctx.detach(), weights.detach(), grad_h, grad_words


def exact_with_grads(h, words, mask, grad_ctx, grad_weights=None):
    """The reference in float64 (from the same values)."""
    return reference_with_grads(h.double(), words.double(), mask, grad_ctx.double(),
                                None if grad_weights is None else grad_weights.double())


def fast_with_grads(h, words, mask, grad_ctx, grad_weights=None):
    """The same through the public op and autograd (C++ on the CPU)."""
    h = h.detach().requires_grad_()
    words = words.detach().requires_grad_()
    ctx, weights = word_region_attention(h, words, mask, need_weights=grad_weights is not None)
    loss = (ctx * grad_ctx).sum()
    if grad_weights is not None:
        loss = loss + (weights * grad_weights).sum()
    grad_h, grad_words = torch.autograd.grad(loss, (h, words))
    return ctx.detach(), None if weights is None else weights.detach(), grad_h, grad_words


def triton_with_grads(h, words, mask, grad_ctx, grad_weights=None):
    """The same through the Triton launchers."""
    from attngan_fast.kernels.attention import word_region_attention_backward, word_region_attention_forward

    ctx, weights = word_region_attention_forward(h, words, mask, grad_weights is not None)
    grad_h, grad_words = word_region_attention_backward(grad_ctx, grad_weights, h, words, mask)
    return ctx, weights if grad_weights is not None else None, grad_h, grad_words


NAMES = ("context", "weights", "grad_h", "grad_words")


def compare_fp32(fast, ref):
    """fp32 results against the reference (fp32 or, better, fp64): 1e-5 relative to each tensor's
    scale (the word gradient sums every region: element-wise relative error is meaningless where
    it cancels to near 0)."""
    for name, f, r in zip(NAMES, fast, ref):
        if f is not None:
            scale = max(1.0, r.abs().max().item()) if r.numel() else 1.0
            torch.testing.assert_close(f.to(r.dtype), r, atol=1e-5 * scale, rtol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


# ----------------------------------------------------------------------------- C++ (CPU)

CPU_SHAPES = [  # (B, C, H, W, T): the test grid B {1, 3} x C {8, 33} x maps x T {1, 5, 18, 33}
    (B, C, H, W, T) for B in (1, 3) for C in (8, 33) for (H, W) in ((4, 4), (7, 5), (16, 16)) for T in (1, 5, 18, 33)
]


@pytest.mark.parametrize("shape", CPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_cpu_matches_reference(shape):
    h, words, mask = make_inputs(*shape)
    grad_ctx, grad_weights = torch.randn_like(h), torch.randn(shape[0], shape[4], *shape[2:4])
    compare_fp32(fast_with_grads(h, words, mask, grad_ctx, grad_weights),
                 exact_with_grads(h, words, mask, grad_ctx, grad_weights))
    # without the weights: a context-only loss
    compare_fp32(fast_with_grads(h, words, mask, grad_ctx), exact_with_grads(h, words, mask, grad_ctx))


@pytest.mark.parametrize("shape", [(4, 32, 64, 64, 18), (2, 32, 128, 128, 18), (2, 48, 64, 64, 18), (2, 33, 9, 11, 64)],
                         ids=["birds-stage2", "birds-stage3", "coco-stage2", "T64"])
def test_cpu_stage_shapes(shape):
    B, T = shape[0], shape[4]
    h, words, mask = make_inputs(*shape, lens=[T, 11, 3, 17][:B])
    grad_ctx = torch.randn_like(h)
    compare_fp32(fast_with_grads(h, words, mask, grad_ctx), exact_with_grads(h, words, mask, grad_ctx))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_low_precision(dtype):
    h, words, mask = make_inputs(3, 33, 7, 5, 18)
    grad_ctx, grad_weights = torch.randn_like(h), torch.randn(3, 18, 7, 5)
    exact = exact_with_grads(h, words, mask, grad_ctx, grad_weights)
    args = (h.to(dtype), words.to(dtype), mask, grad_ctx.to(dtype), grad_weights.to(dtype))
    for name, f, p, e in zip(NAMES, fast_with_grads(*args), reference_with_grads(*args), exact):
        assert f.dtype == dtype
        assert_low_precision_ok(f, p, e, name=name)


def test_cpu_gradcheck_float64():
    h, words, mask = make_inputs(3, 5, 3, 4, 6, lens=[6, 0, 2], dtype=torch.float64)
    h.requires_grad_()
    words.requires_grad_()
    torch.autograd.gradcheck(lambda h, w: word_region_attention(h, w, mask, need_weights=True), (h, words))
    torch.autograd.gradcheck(lambda h, w: word_region_attention(h, w, None)[0], (h, words))


def test_opcheck():
    h, words, mask = make_inputs(2, 6, 3, 5, 4)
    for need_weights in (True, False):
        for m in (mask, None):
            torch.library.opcheck(OP, (h, words, m, need_weights))
            torch.library.opcheck(OP, (h.requires_grad_(), words.requires_grad_(), m, need_weights))
            h, words = h.detach(), words.detach()
    grad_ctx, grad_weights = torch.randn_like(h), torch.randn(2, 4, 3, 5)
    weights = OP(h, words, mask, True)[1]
    for gw in (grad_weights, None):
        for w in (weights, None):
            torch.library.opcheck(OP_BACKWARD, (grad_ctx, gw, h, words, mask, w))


def test_layouts_non_contiguous_and_channels_last():
    h, words, mask = make_inputs(3, 8, 6, 5, 7)
    grad_ctx = torch.randn_like(h)
    ref = exact_with_grads(h, words, mask, grad_ctx)
    words_t = words.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (B, C, T) with stride 1 on C
    mask_t = mask.t().contiguous().t()
    h_cl = h.contiguous(memory_format=torch.channels_last)
    h_strided = torch.randn(3, 8, 6, 10)[..., ::2].copy_(h)
    for hh, ww, mm in ((h_cl, words, mask), (h_strided, words_t, mask_t), (h, words_t, mask.to(torch.uint8))):
        compare_fp32(fast_with_grads(hh, ww, mm, grad_ctx.contiguous(memory_format=torch.channels_last)), ref)


def test_all_masked_caption_is_zero_and_finite():
    h, words, mask = make_inputs(3, 8, 4, 5, 6, lens=[6, 0, 3])
    grad_ctx, grad_weights = torch.randn_like(h), torch.randn(3, 6, 4, 5)
    fast = fast_with_grads(h, words, mask, grad_ctx, grad_weights)
    assert all(torch.isfinite(t).all() for t in fast)
    assert all((t[1] == 0).all() for t in fast), "sample 1: weights, context and gradients must be 0"
    compare_fp32(fast, exact_with_grads(h, words, mask, grad_ctx, grad_weights))


def test_word_gradient_is_deterministic_across_thread_counts():
    h, words, mask = make_inputs(2, 32, 48, 48, 18)
    grad_ctx = torch.randn_like(h)
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(OP_BACKWARD(grad_ctx, None, h, words, mask, None))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_bad_inputs_name_the_argument():
    h, words, mask = make_inputs(2, 4, 3, 3, 5)
    cases = [
        ((h, torch.randn(2, 5, 5), mask), ValueError, "words: expected (B=2, C=4, T), got (2, 5, 5)"),
        ((h, torch.randn(3, 4, 5), mask), ValueError, "words: expected (B=2, C=4, T), got (3, 4, 5)"),
        ((h[0], words, mask), ValueError, "h: expected (B, C, H, W), got (4, 3, 3)"),
        ((h, words, mask[:, :4]), ValueError, "mask: expected (B=2, T=5), got (2, 4)"),
        ((h, words, mask.float()), TypeError, "mask: expected a bool (or uint8) tensor, got torch.float32"),
        ((h.long(), words, mask), TypeError, "h: expected a floating-point tensor, got torch.int64"),
        ((h, words.double(), mask), TypeError, "words: expected dtype torch.float32 (that of h), got torch.float64"),
        ((h, words.to("meta"), mask), ValueError, "words: expected device cpu (that of h), got meta"),
        ((h, words, mask.to("meta")), ValueError, "mask: expected device cpu (that of h), got meta"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            word_region_attention(*args)


def test_reference_backend_and_other_devices_use_the_reference(monkeypatch):
    h, words, mask = make_inputs(2, 4, 3, 3, 5)
    ref = word_region_attention_reference(h, words, mask)
    with backend("reference"):
        ctx, weights = word_region_attention(h, words, mask, need_weights=True)
    assert torch.equal(ctx, ref[0]) and torch.equal(weights, ref[1])
    ctx, weights = word_region_attention(h, words, mask)
    assert weights is None
    assert_close(ctx, ref[0])
    monkeypatch.setattr(dispatch, "_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            ctx, weights = word_region_attention(h.to("meta"), words.to("meta"), mask.to("meta"), need_weights=True)
    assert ctx.shape == h.shape and weights.shape == (2, 5, 3, 3)
    assert len([w for w in caught if "word_region_attention: no meta kernel" in str(w.message)]) == 1


# ----------------------------------------------------------------------------- torch.compile and the models


@pytest.mark.filterwarnings("ignore:dynamo_pgo force disabled")
def test_compile_fullgraph_op_forward_backward():
    h, words, mask = make_inputs(2, 8, 5, 6, 7)
    grad_ctx, grad_weights = torch.randn_like(h), torch.randn(2, 7, 5, 6)

    def run(fn):
        hh, ww = h.clone().requires_grad_(), words.clone().requires_grad_()
        ctx, weights = fn(hh, ww, mask)
        ((ctx * grad_ctx).sum() + (weights * grad_weights).sum()).backward()
        return ctx, weights, hh.grad, ww.grad

    def attend(hh, ww, m):
        return word_region_attention(hh, ww, m, need_weights=True)

    eager = run(attend)
    for backend_name in ("aot_eager", "inductor"):
        torch._dynamo.reset()
        # no on-disk caches: their keys do not cover a custom op's schema, so an entry compiled
        # against an older build of this op could be replayed
        with torch._inductor.config.patch(force_disable_caches=True):
            compiled = run(torch.compile(attend, fullgraph=True, backend=backend_name))
        compare_fp32(compiled, eager)


def test_global_attention_fast_equals_reference_backend():
    att = GlobalAttentionGeneral(8, 6)
    h, context = torch.randn(3, 8, 5, 4, requires_grad=True), torch.randn(3, 6, 7, requires_grad=True)
    att.applyMask(torch.arange(7).unsqueeze(0) >= torch.tensor([[7], [2], [0]]))
    grads = []
    for name in ("fast", "reference"):
        with backend(name):
            ctx, weights = att(h, context)
            loss = ctx.sum() + (weights ** 2).sum()
            grads.append((ctx, weights, *torch.autograd.grad(loss, (h, context, att.conv_context.weight))))
    for a, b in zip(*grads):
        assert_close(a, b)
    # mask_mode="original" keeps the reference (and so calls att.sm)
    original = GlobalAttentionGeneral(8, 6, mask_mode="original")
    original.applyMask(torch.zeros(3, 7, dtype=torch.bool))
    calls = []
    original.sm.register_forward_hook(lambda *args: calls.append(1))
    original(h, context)
    assert calls


def test_compile_next_stage_g_fullgraph_equals_eager():
    cfg = config.load("bird_attn2", **{"GAN.GF_DIM": 8, "GAN.R_NUM": 1, "TEXT.EMBEDDING_DIM": 12, "GAN.CONDITION_DIM": 6})
    stage = NEXT_STAGE_G(cfg.GAN.GF_DIM, cfg.TEXT.EMBEDDING_DIM, cfg.GAN.CONDITION_DIM, cfg).eval()
    h = torch.randn(2, cfg.GAN.GF_DIM, 8, 8)
    c_code = torch.randn(2, cfg.GAN.CONDITION_DIM)
    words = torch.randn(2, cfg.TEXT.EMBEDDING_DIM, 9)
    mask = torch.arange(9).unsqueeze(0) >= torch.tensor([[9], [4]])

    def run(module):
        hh = h.clone().requires_grad_()
        out, att = module(hh, c_code, words, mask)
        (out.square().sum() + att.sum()).backward()
        return out, att, hh.grad

    eager = run(stage)
    compiled = run(torch.compile(stage, fullgraph=True, backend="aot_eager"))
    for name, a, b in zip(("out", "att", "grad_h"), compiled, eager):
        assert_close(a, b, name=name)


# ----------------------------------------------------------------------------- Triton (interpreter on CPU)

# A covering subset of the CPU grid above (the interpreter is slow): every B, C, map and T value
# appears, with mixed caption lengths, plus C > 64 (several channel chunks) and T = 64.
TRITON_SHAPES = [
    (1, 8, 4, 4, 1),
    (3, 33, 7, 5, 5),
    (3, 8, 16, 16, 18),
    (1, 33, 16, 16, 33),
    (3, 8, 7, 5, 33),
    (3, 33, 4, 4, 18),
    (2, 70, 5, 3, 5),
    (2, 8, 3, 5, 64),
]


@pytest.mark.parametrize("shape", TRITON_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_triton_matches_reference(shape):
    h, words, mask = make_inputs(*shape, device=TRITON_DEVICE)
    grad_ctx = torch.randn_like(h)
    grad_weights = torch.randn(shape[0], shape[4], *shape[2:4], device=TRITON_DEVICE)
    compare_fp32(triton_with_grads(h, words, mask, grad_ctx, grad_weights),
                 exact_with_grads(h, words, mask, grad_ctx, grad_weights))
    compare_fp32(triton_with_grads(h, words, None, grad_ctx), exact_with_grads(h, words, None, grad_ctx))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_low_precision(dtype):
    h, words, mask = make_inputs(3, 33, 7, 5, 18, device=TRITON_DEVICE)
    grad_ctx, grad_weights = torch.randn_like(h), torch.randn(3, 18, 7, 5, device=TRITON_DEVICE)
    exact = exact_with_grads(h, words, mask, grad_ctx, grad_weights)
    args = (h.to(dtype), words.to(dtype), mask, grad_ctx.to(dtype), grad_weights.to(dtype))
    for name, f, p, e in zip(NAMES, triton_with_grads(*args), reference_with_grads(*args), exact):
        assert f.dtype == dtype
        assert_low_precision_ok(f, p, e, name=name)


def test_triton_layouts_and_all_masked():
    h, words, mask = make_inputs(3, 8, 6, 5, 7, lens=[7, 0, 3], device=TRITON_DEVICE)
    grad_ctx, grad_weights = torch.randn_like(h), torch.randn(3, 7, 6, 5, device=TRITON_DEVICE)
    ref = exact_with_grads(h, words, mask, grad_ctx, grad_weights)
    fast = triton_with_grads(h.contiguous(memory_format=torch.channels_last), words.transpose(1, 2).contiguous().transpose(1, 2),
                             mask, grad_ctx.contiguous(memory_format=torch.channels_last), grad_weights)
    compare_fp32(fast, ref)
    assert all(torch.isfinite(t).all() and (t[1] == 0).all() for t in fast)


def test_triton_strided_backward_matches_and_is_deterministic(monkeypatch):
    """Few programs per sample, each summing the word gradient over several region blocks."""
    from attngan_fast.kernels import attention as triton_attention

    monkeypatch.setattr(triton_attention, "_TARGET_PROGRAMS", 4)
    assert triton_attention.backward_split(2, 256) == 2
    h, words, mask = make_inputs(2, 8, 16, 16, 5, device=TRITON_DEVICE)
    grad_ctx = torch.randn_like(h)
    first, second = (triton_with_grads(h, words, mask, grad_ctx) for _ in range(2))
    compare_fp32(first, exact_with_grads(h, words, mask, grad_ctx))
    assert torch.equal(first[3], second[3])


@pytest.mark.cuda
def test_cuda_op_dispatch_and_autograd():
    assert "cuda" in dispatch.kernel_devices("word_region_attention")
    h, words, mask = make_inputs(4, 32, 64, 64, 18, device="cuda")
    grad_ctx, grad_weights = torch.randn_like(h), torch.randn(4, 18, 64, 64, device="cuda")
    compare_fp32(fast_with_grads(h, words, mask, grad_ctx, grad_weights),
                 exact_with_grads(h, words, mask, grad_ctx, grad_weights))
    torch.library.opcheck(OP, (h[:2, :, :8, :8].contiguous(), words[:2], mask[:2], True))
