"""The CUDA block kernels (csrc/cuda/blocks.cu, csrc/cuda/down_blocks.cu) executed on the CPU through
the CUDA emulation.

csrc/cuda/blocks.cu (and down_blocks.cu), compiled as host C++ against csrc/emu/cuda_emu.h (tests/cuda_emu.py,
docs/cuda_emulation.md), registers ``attngan_fast_emu::*``; while the ``emulated`` fixture is
active ``attngan_fast::*`` on CPU tensors runs those kernels, so the public ops and modules
(autograd, BatchNorm bookkeeping) run the CUDA code path: every kernel, the grids, the shared
memory tiles and barriers, the reductions. The cases are those of tests/test_blocks.py (the CPU
kernels) plus fp16, odd sizes and grids that loop over several tiles per block.

In CI (``CI=true``) a failed build fails these tests; elsewhere they skip without a compiler.
"""
from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.nn.functional as F

import attngan_fast
from attngan_fast import config
from attngan_fast.models import D_NET64
from attngan_fast.ops import BatchNormArgs, down_block, res_block, up_block, upsample_conv3x3
from attngan_fast.ops import down_blocks as down_ops
from tests import cuda_emu
from tests.kernel_checks import assert_close, assert_low_precision_ok
from tests.test_blocks import (
    PHASE_SHAPES,
    bn_double,
    build,
    compare,
    compare_low_precision,
    compare_running_stats,
    input_like,
    run,
)
from tests.test_down_blocks import KINDS as D_KINDS
from tests.test_down_blocks import _randomize_bn as randomize_bn
from tests.test_down_blocks import build as build_d


@pytest.fixture(scope="session")
def emulated_extension() -> float:
    """Build (cached in build/cuda_emu/) and load the emulated extension: the build's seconds."""
    if not cuda_emu.can_build() and os.environ.get("CI") != "true":
        pytest.skip("no C++ compiler / ninja to build the CUDA emulation")
    return cuda_emu.load()


@pytest.fixture(autouse=True)
def emulated(emulated_extension):
    """attngan_fast::* on CPU tensors runs the emulated CUDA kernels during each test."""
    with cuda_emu.routed():
        yield


# ---- the phase decomposition (fold / unfold, im2col / col2im, the copy epilogue) ---------------


@pytest.mark.parametrize("shape", PHASE_SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_conv3x3_is_exact(shape, channels_last):
    n, ci, co, h, w = shape
    x = input_like(n, ci, h, w, channels_last, torch.float64).requires_grad_()
    weight = torch.randn(co, ci, 3, 3, dtype=torch.float64, requires_grad=True)
    out = upsample_conv3x3(x, weight)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)
    grad = torch.randn_like(ref)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert_close(out, ref)
    for g, g_ref, name in zip(torch.autograd.grad(out, [x, weight], grad), torch.autograd.grad(ref, [x, weight], grad),
                              ["x", "weight"]):
        assert_close(g, g_ref, name=name)


# ---- upBlock / Block3x3_relu / ResBlock against the modules -------------------------------------

# (n, ci, co, h, w): odd maps (5x13: the single-conv phase path, 65 pixels), 1x1 maps, batch 1,
# channel counts that are not powers of two and that leave partial 32-channel tiles (20, 40 GLU
# channels), more tiles than the emulated reduction grid has blocks (so that blocks loop).
UP_SHAPES = [(2, 3, 2, 5, 7), (1, 1, 1, 3, 2), (3, 7, 5, 4, 4), (2, 64, 32, 8, 8), (2, 5, 3, 11, 7), (1, 4, 2, 9, 9),
             (1, 3, 2, 5, 13), (2, 3, 2, 1, 1), (1, 6, 20, 5, 13), (2, 5, 40, 6, 3)]


def _layouts(shapes):
    """(shape, channels_last) pairs; a 1x1 map only as NCHW (its strides are both formats', and
    eager's output format then follows other rules than the ops' caller_format)."""
    return [(s, cl) for s in shapes for cl in (False, True) if not (cl and s[-2:] == (1, 1))]


@pytest.mark.parametrize("kind", ["up", "block3x3"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,channels_last", _layouts(UP_SHAPES))
def test_up_block_matches_module(kind, training, channels_last, shape):
    n, ci, co, h, w = shape
    compare(build(kind, ci, co).train(training), input_like(n, ci, h, w, channels_last))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,channels_last", _layouts([(2, 3, 5, 7), (1, 1, 2, 3), (1, 64, 8, 8), (3, 5, 4, 4),
                                                          (1, 3, 5, 13), (2, 3, 1, 1), (1, 40, 6, 9)]))
def test_res_block_matches_module(training, channels_last, shape):
    n, c, h, w = shape
    compare(build("res", c).train(training), input_like(n, c, h, w, channels_last))


def test_up_block_birds_channels():
    """INIT_STAGE_G's first upBlock: 512 -> 256 (conv 512 -> 512, 16 channel tiles) at 4x4."""
    compare(build("up", 512, 256), input_like(2, 512, 4, 4))


@pytest.mark.parametrize("momentum", [None, 0.3])
def test_up_block_running_stats_over_steps(momentum):
    compare_running_stats(build("up", 4, 3), 2, (2, 4, 5, 3), momentum)


def test_res_block_bn_settings():
    """Different eps and momentum in the two BatchNorms are honoured."""
    m = build("res", 4)
    m.block[1].eps, m.block[1].momentum = 1e-3, 0.5
    m.block[4].eps, m.block[4].momentum = 1e-2, None
    compare(m, torch.randn(2, 4, 5, 6))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["up", "block3x3", "res"])
def test_blocks_low_precision(kind, dtype):
    """fp16 / bf16 storage, fp32 math in the kernels: error within 2x plain PyTorch's own."""
    compare_low_precision(build(kind, 8, 4), torch.randn(2, 8, 6, 5), dtype, kind)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["up", "res"])
def test_blocks_low_precision_backward(kind, dtype):
    """The backward kernels in fp16 / bf16: input and parameter gradients within 2x plain PyTorch's error."""
    m = build(kind, 8, 4)
    x = torch.randn(2, 8, 6, 5)
    grad = torch.randn_like(build(kind, 8, 4)(x))
    results = {}
    for name, backend, dt in (("fast", "fast", dtype), ("plain", "reference", dtype),
                              ("exact", "reference", torch.float64)):
        _, grads, _ = run(copy.deepcopy(m).to(dt), x.to(dt), grad.to(dt), backend)
        results[name] = grads
    for key in results["exact"]:
        assert_low_precision_ok(results["fast"][key], results["plain"][key], results["exact"][key],
                                name=f"{kind} grad {key}", factor=2.0, atol=1e-2)


def test_unwritten_output_elements_show(monkeypatch):
    """With deterministic mode every empty() is NaN-filled: no output, gradient or partial sum is missed."""
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for m, x in ((build("up", 3, 2), torch.randn(2, 3, 3, 5)), (build("up", 3, 2), torch.randn(1, 3, 9, 8)),
                     (build("res", 3), torch.randn(2, 3, 3, 5))):
            for channels_last in (False, True):
                xi = x.to(memory_format=torch.channels_last) if channels_last else x
                out, grads, _ = run(m, xi, torch.randn_like(m(xi)), "fast")
                assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    finally:
        torch.use_deterministic_algorithms(previous)


# ---- gradcheck (float64) ------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("upsample,size", [(True, (3, 2)), (True, (5, 13)), (False, (3, 2))])
def test_up_block_gradcheck(training, upsample, size):
    (gamma, beta), (rm, rv) = bn_double(4, not training)
    x = torch.randn(2 if size == (3, 2) else 1, 3 if size == (3, 2) else 2, *size, dtype=torch.float64,
                    requires_grad=True)
    weight = torch.randn(4, x.shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, g, b: up_block(x, w, BatchNormArgs(g, b, rm, rv), training, upsample)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, weight, gamma, beta), fast_mode=True)


@pytest.mark.parametrize("training", [True, False])
def test_res_block_gradcheck(training):
    (g1, b1), (rm1, rv1) = bn_double(6, not training)
    (g2, b2), (rm2, rv2) = bn_double(3, not training)
    x = torch.randn(2, 3, 3, 2, dtype=torch.float64, requires_grad=True)
    w1 = torch.randn(6, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w1, g1, b1, w2, g2, b2: res_block(  # noqa: E731
        x, w1, BatchNormArgs(g1, b1, rm1, rv1), w2, BatchNormArgs(g2, b2, rm2, rv2), training)
    assert torch.autograd.gradcheck(fn, (x, w1, g1, b1, w2, g2, b2), fast_mode=True)


# ---- the emulated ops themselves ----------------------------------------------------------------


def test_emulated_ops_are_registered_and_run_the_cuda_code():
    """attngan_fast_emu::up_block (no routing, no autograd) gives the CPU kernel's statistics."""
    x, w = torch.randn(2, 3, 5, 7), torch.randn(6, 3, 3, 3)
    g, b = torch.rand(6) + 0.5, torch.randn(6)
    out, conv_out, mean, var = torch.ops.attngan_fast_emu.up_block(x, w, g, b, None, None, True, True, 1e-5)
    ref = F.conv2d(F.interpolate(x, scale_factor=2), w, padding=1)
    assert_close(mean, ref.mean((0, 2, 3)), name="mean")
    assert_close(var, ref.var((0, 2, 3), unbiased=False), name="var")
    assert_close(out, F.glu(F.batch_norm(ref, None, None, g, b, True), 1), name="out")


def test_emulated_statistics_are_reproducible():
    """The fixed-order reduction (no atomics): two runs agree bitwise."""
    x, w = torch.randn(3, 40, 9, 11), torch.randn(80, 40, 3, 3)
    g, b = torch.rand(80) + 0.5, torch.randn(80)
    first = torch.ops.attngan_fast.up_block(x, w, g, b, None, None, True, True, 1e-5)
    second = torch.ops.attngan_fast.up_block(x, w, g, b, None, None, True, True, 1e-5)
    for a, c in zip(first, second):
        assert torch.equal(a, c)


# ---- on a GPU: the real kernels' statistics are bitwise reproducible ----------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_block_statistics_are_bitwise_reproducible(dtype):
    """mean / var (forward) and the BatchNorm gradients (backward reduce) repeat exactly on CUDA."""
    ops = torch.ops.attngan_fast
    x = torch.randn(8, 64, 16, 16, device="cuda", dtype=dtype)
    w = torch.randn(128, 64, 3, 3, device="cuda", dtype=dtype)
    g, b = torch.rand(128, device="cuda") + 0.5, torch.randn(128, device="cuda")
    g, b = g.to(dtype), b.to(dtype)
    first = ops.up_block(x, w, g, b, None, None, True, True, 1e-5)
    second = ops.up_block(x, w, g, b, None, None, True, True, 1e-5)
    assert torch.equal(first[1], second[1])  # the same conv output (cuDNN's forward), so that
    assert torch.equal(first[2], second[2]) and torch.equal(first[3], second[3])  # the stats must agree
    _, conv_out, mean, var = first
    grad = torch.randn_like(first[0])
    grads = [ops.up_block_backward(grad, x, w, g, b, conv_out, mean, var, True, True, 1e-5) for _ in range(2)]
    assert torch.equal(grads[0][2], grads[1][2]) and torch.equal(grads[0][3], grads[1][3])  # grad gamma, beta


# ---- the discriminator blocks (csrc/cuda/down_blocks.cu) ----------------------------------------

# (n, ci, co, h, w): odd maps, 1x1 outputs of the stride-2 conv, batch 1, channels not a power of
# two; the last has more than 4096 values per channel (several reduction chunks per channel)
D_SHAPES = [(2, 3, 5, 7, 9), (3, 6, 10, 2, 2), (1, 7, 3, 6, 5), (2, 16, 40, 8, 8), (2, 3, 4, 130, 66)]


@pytest.fixture
def d_all_shapes(monkeypatch):
    """The kernel for every output size (the CPU dispatch limit lifted: the emulation runs on CPU tensors)."""
    monkeypatch.setattr(down_ops, "CPU_MAX_OUTPUT_PIXELS", 1 << 30)
    monkeypatch.setattr(down_ops, "CPU_MIN_MACS", 0)


@pytest.mark.usefixtures("d_all_shapes")
@pytest.mark.parametrize("kind", list(D_KINDS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape,channels_last", _layouts(D_SHAPES))
def test_down_block_matches_module(kind, training, channels_last, shape):
    n, ci, co, h, w = shape
    k, stride, _, has_bn = D_KINDS[kind]
    out_pixels = n * (h // 2) * (w // 2) if stride == 2 else n * h * w
    if training and has_bn and out_pixels <= 1:
        pytest.skip("train-mode BatchNorm needs more than 1 value per channel")
    compare(build_d(kind, ci, co).train(training), input_like(n, ci, h, w, channels_last))


@pytest.mark.usefixtures("d_all_shapes")
@pytest.mark.parametrize("training", [True, False])
def test_d_heads_and_encoder_match_modules(training):
    """encode_image_by_16times (four runs, the first without BN) and COND_DNET's jointConv with the addend."""
    cfg = config.load("bird_attn2", **{"GAN.DF_DIM": 2, "TEXT.EMBEDDING_DIM": 6})
    net = D_NET64(cfg)
    randomize_bn(net)
    compare(net.img_code_s16.train(training), input_like(2, 3, 32, 32))
    head = net.COND_DNET.train(training)
    h, c = torch.randn(3, 16, 4, 4), torch.randn(3, 6)
    grads = {}
    for name in ("fast", "reference"):
        m, hi, ci = copy.deepcopy(head), h.clone().requires_grad_(), c.clone().requires_grad_()
        with attngan_fast.backend(name):
            out = m(hi, ci)
        grads[name] = (out, *torch.autograd.grad(out.sum(), [hi, ci, *m.parameters()]))
    for a, b in zip(grads["fast"], grads["reference"]):
        assert_close(a, b)


@pytest.mark.usefixtures("d_all_shapes")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["down", "first"])
def test_down_block_low_precision(kind, dtype):
    compare_low_precision(build_d(kind, 8, 6), torch.randn(2, 8, 10, 6), dtype, kind)


@pytest.mark.usefixtures("d_all_shapes")
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", list(D_KINDS))
def test_down_block_gradcheck(kind, training):
    k, stride, padding, has_bn = D_KINDS[kind]
    (gamma, beta), (rm, rv) = bn_double(4, not training)
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, k, k, dtype=torch.float64, requires_grad=True)
    addend_shape = (2, 4, (5 + 2 * padding - k) // stride + 1, (4 + 2 * padding - k) // stride + 1)
    addend = torch.randn(addend_shape, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, g, b, a: down_block(  # noqa: E731
        x, w, BatchNormArgs(g, b, rm, rv) if has_bn else None, training, stride, padding, addend=a)
    assert torch.autograd.gradcheck(fn, (x, w, gamma, beta, addend), fast_mode=True)


def test_emulated_down_block_statistics_are_reproducible():
    """The fixed-order reduction over several chunks per channel (no atomics): two runs agree bitwise."""
    x, w = torch.randn(2, 3, 130, 66), torch.randn(5, 3, 3, 3)
    g, b = torch.rand(5) + 0.5, torch.randn(5)
    runs = [torch.ops.attngan_fast.down_block(x, w, None, g, b, None, None, 1, 1, True, 1e-5, 0.2) for _ in range(2)]
    for a, c in zip(*runs):
        assert torch.equal(a, c)
    ref = F.conv2d(x, w, padding=1)
    assert_close(runs[0][2], ref.mean((0, 2, 3)), name="mean")
    assert_close(runs[0][3], ref.var((0, 2, 3), unbiased=False), name="var")
