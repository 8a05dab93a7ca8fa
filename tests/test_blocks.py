"""The fused generator blocks (attngan_fast.ops.blocks) against the reference modules.

Reference: the plain ``nn.Sequential`` forward of models/blocks.py (``backend("reference")``).
Compared: outputs, the gradients of the input and of every parameter, running statistics and
num_batches_tracked, in train and eval mode, NCHW and channels_last.
"""
import copy
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import attngan_fast
from attngan_fast.models import Block3x3_relu, ResBlock, upBlock
from attngan_fast.models import blocks as model_blocks
from attngan_fast.ops import BatchNormArgs, res_block, up_block, upsample_conv3x3
from tests.kernel_checks import TOLERANCES, assert_close, assert_low_precision_ok

ops = torch.ops.attngan_fast


def build(kind: str, ci: int, co: int = 0, dtype: torch.dtype = torch.float32, device: str = "cpu") -> nn.Module:
    """upBlock(ci, co) / Block3x3_relu(ci, co) / ResBlock(ci) with random BN affine and running stats."""
    m = {"up": lambda: upBlock(ci, co), "block3x3": lambda: Block3x3_relu(ci, co), "res": lambda: ResBlock(ci)}[kind]()
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.5)
                bn.running_mean.normal_(0.0, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
    return m.to(device=device, dtype=dtype)


def run(m: nn.Module, x: torch.Tensor, grad: torch.Tensor, backend: str):
    """Forward + backward of a copy of m: (out, {name: grad} incl. "x", {name: buffer})."""
    m = copy.deepcopy(m)
    x = x.detach().clone().requires_grad_()
    with attngan_fast.backend(backend):
        out = m(x)
    params = dict(m.named_parameters())
    grads = torch.autograd.grad(out, [x, *params.values()], grad)
    return out, {"x": grads[0], **dict(zip(params, grads[1:]))}, dict(m.named_buffers())


def assert_grad_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Gradients are sums over the batch and the map: 1e-5 of their largest magnitude (fp32)."""
    atol, rtol = TOLERANCES[expected.dtype]
    atol = atol * max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def assert_buffers_equal(buffers: dict, buffers_ref: dict) -> None:
    for name, ref in buffers_ref.items():
        if ref.is_floating_point():
            assert_close(buffers[name], ref, name=name)
        else:
            assert torch.equal(buffers[name], ref), name


def compare(m: nn.Module, x: torch.Tensor) -> None:
    """The fast and the reference forward of m agree (outputs, grads, buffers, memory format)."""
    with torch.no_grad(), attngan_fast.backend("reference"):
        shape = copy.deepcopy(m)(x).shape
    grad = torch.randn(shape, dtype=x.dtype, device=x.device)
    out, grads, buffers = run(m, x, grad, "fast")
    out_ref, grads_ref, buffers_ref = run(m, x, grad, "reference")
    channels_last = torch.channels_last
    assert out.is_contiguous(memory_format=channels_last) == out_ref.is_contiguous(memory_format=channels_last)
    assert grads["x"].stride() == x.stride() or grads["x"].is_contiguous(memory_format=_format(x))
    assert_close(out, out_ref, name="out")
    for name in grads_ref:
        assert_grad_close(grads[name], grads_ref[name], name=f"grad {name}")
    assert_buffers_equal(buffers, buffers_ref)


def _format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if not x.is_contiguous() else torch.contiguous_format


def input_like(n, c, h, w, channels_last=False, dtype=torch.float32, device="cpu"):
    x = torch.randn(n, c, h, w, dtype=dtype, device=device)
    return x.to(memory_format=torch.channels_last) if channels_last else x


def compare_low_precision(m: nn.Module, x: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    """``m`` in ``dtype`` on the fast backend: forward within plain PyTorch's own error at ``dtype``."""
    with torch.no_grad(), attngan_fast.backend("fast"):
        fast = copy.deepcopy(m).to(dtype)(x.to(dtype))
    with torch.no_grad(), attngan_fast.backend("reference"):
        plain = copy.deepcopy(m).to(dtype)(x.to(dtype))
        exact = copy.deepcopy(m).double()(x.double())
    assert fast.dtype == dtype
    assert_low_precision_ok(fast, plain, exact, name=name)


def compare_running_stats(m: nn.Sequential, bn: int, shape: tuple[int, ...], momentum: float | None) -> None:
    """Three training steps of ``m`` (fast) and of a copy (reference), ``m[bn]`` the BatchNorm
    (momentum None: the cumulative average), then eval: the same statistics and output."""
    m[bn].momentum, m[bn].eps = momentum, 1e-3
    ref = copy.deepcopy(m)
    for _ in range(3):
        x = torch.randn(*shape)
        with attngan_fast.backend("fast"):
            m(x)
        with attngan_fast.backend("reference"):
            ref(x)
    assert int(m[bn].num_batches_tracked) == int(ref[bn].num_batches_tracked) == 3
    assert_close(m[bn].running_mean, ref[bn].running_mean)
    assert_close(m[bn].running_var, ref[bn].running_var)
    compare(m.eval(), torch.randn(*shape))


def compare_compiled_train_step(model: nn.Module, x: torch.Tensor) -> None:
    """``model`` under torch.compile(fullgraph=True, aot_eager) on the fast backend against an eager
    copy on the reference: outputs, parameter gradients, buffers."""
    ref = copy.deepcopy(model)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    out = compiled(x)
    with attngan_fast.backend("reference"):
        out_ref = ref(x)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_ref.backward(grad)
    assert_close(out, out_ref)
    for (name, p), p_ref in zip(model.named_parameters(), ref.parameters()):
        assert_grad_close(p.grad, p_ref.grad, name=name)
    assert_buffers_equal(dict(model.named_buffers()), dict(ref.named_buffers()))


def compare_compiled_eval(model: nn.Module, x: torch.Tensor) -> None:
    """``model`` under torch.compile(fullgraph=True, inductor) on the fast backend, no grad, against
    the eager reference."""
    with torch.no_grad():
        out = torch.compile(model, fullgraph=True)(x)
        with attngan_fast.backend("reference"):
            out_ref = model(x)
    assert_close(out, out_ref)


# ---- the phase decomposition --------------------------------------------------------------------


# maps of at most 64 pixels run the per-phase GEMMs, larger ones the single 2x2 conv (csrc/blocks.h)
PHASE_SHAPES = [(2, 3, 4, 5, 7), (1, 1, 1, 1, 1), (1, 5, 2, 1, 6), (3, 16, 7, 8, 8), (2, 3, 4, 9, 11), (1, 2, 3, 13, 5)]


@pytest.mark.parametrize("shape", PHASE_SHAPES)
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_conv3x3_is_exact(shape, channels_last):
    """Borders, odd sizes, 1x1 maps, single channels, both phase paths: float64 to rounding."""
    n, ci, co, h, w = shape
    x = input_like(n, ci, h, w, channels_last, torch.float64).requires_grad_()
    weight = torch.randn(co, ci, 3, 3, dtype=torch.float64, requires_grad=True)
    out = upsample_conv3x3(x, weight)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)
    grad = torch.randn_like(ref)
    assert out.shape == (n, co, 2 * h, 2 * w)
    assert out.is_contiguous(memory_format=_format(x))
    assert_close(out, ref)
    for g, g_ref, name in zip(torch.autograd.grad(out, [x, weight], grad), torch.autograd.grad(ref, [x, weight], grad),
                              ["x", "weight"]):
        assert_close(g, g_ref, name=name)


def test_upsample_conv3x3_float32_and_noncontiguous():
    x = torch.randn(2, 6, 5, 9).transpose(2, 3)  # neither NCHW- nor NHWC-dense
    weight = torch.randn(4, 6, 3, 3)
    assert_close(upsample_conv3x3(x, weight), F.conv2d(F.interpolate(x, scale_factor=2), weight, padding=1))


# ---- upBlock / Block3x3_relu --------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["up", "block3x3"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 2, 5, 7), (1, 1, 1, 3, 2), (3, 7, 5, 4, 4), (2, 64, 32, 8, 8),
                                   (2, 5, 3, 11, 7), (1, 4, 2, 9, 9)])
def test_up_block_matches_module(kind, training, channels_last, shape):
    n, ci, co, h, w = shape
    m = build(kind, ci, co).train(training)
    compare(m, input_like(n, ci, h, w, channels_last))


@pytest.mark.parametrize("kind", ["up", "block3x3", "res"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("channels", [8, 16, 32])
def test_blocks_unrolled_channel_counts(kind, training, channels_last, channels):
    """The per-pixel channel counts the CPU kernels unroll (csrc/cpu/blocks.cpp with_channel_count),
    on maps above the phase GEMMs' 8x8 (one conv, padded phase layout)."""
    ci = channels if kind == "res" else 3
    m = build("res", channels) if kind == "res" else build(kind, ci, channels)
    compare(m.train(training), input_like(2, ci, 9, 10, channels_last))


def test_up_block_birds_channels():
    """INIT_STAGE_G's first upBlock: 512 -> 256 (conv 512 -> 512) at 4x4."""
    compare(build("up", 512, 256), input_like(2, 512, 4, 4))


@pytest.mark.parametrize("momentum", [None, 0.3])
def test_up_block_running_stats_over_steps(momentum):
    compare_running_stats(build("up", 4, 3), 2, (2, 4, 5, 3), momentum)


def test_up_block_without_running_stats():
    """track_running_stats=False: batch statistics in train and eval mode, no buffers."""
    m = upBlock(3, 2)
    m[2] = nn.BatchNorm2d(4, track_running_stats=False)
    with torch.no_grad():
        m[2].weight.uniform_(0.5, 1.5)
    compare(m.train(), torch.randn(2, 3, 4, 5))
    compare(m.eval(), torch.randn(2, 3, 4, 5))


# ---- ResBlock -----------------------------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7), (1, 1, 2, 3), (1, 64, 8, 8), (3, 5, 4, 4)])
def test_res_block_matches_module(training, channels_last, shape):
    n, c, h, w = shape
    compare(build("res", c).train(training), input_like(n, c, h, w, channels_last))


def test_res_block_bn_settings():
    """Different eps and momentum in the two BatchNorms are honoured."""
    m = build("res", 4)
    m.block[1].eps, m.block[1].momentum = 1e-3, 0.5
    m.block[4].eps, m.block[4].momentum = 1e-2, None
    compare(m, torch.randn(2, 4, 5, 6))


# ---- low precision ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16])
@pytest.mark.parametrize("kind", ["up", "res"])
def test_blocks_low_precision(kind, dtype):
    compare_low_precision(build(kind, 8, 4), torch.randn(2, 8, 6, 5), dtype, kind)


# ---- dispatch and fallbacks ---------------------------------------------------------------------


def _count_calls(monkeypatch, name):
    calls = []
    real = getattr(model_blocks, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(model_blocks, name, spy)
    return calls


def test_modules_dispatch_and_fall_back(monkeypatch):
    up_calls, res_calls = _count_calls(monkeypatch, "up_block"), _count_calls(monkeypatch, "res_block")
    x = torch.randn(2, 4, 3, 3)
    up, block, res = build("up", 4, 2), build("block3x3", 4, 2), build("res", 4)
    with attngan_fast.backend("reference"):
        up(x), block(x), res(x)
    assert up_calls == res_calls == []
    up(x), block(x), res(x)
    assert len(up_calls) == 2 and len(res_calls) == 1
    # configurations the fused ops do not cover run the plain modules
    up_bias = build("up", 4, 2)
    up_bias[1] = nn.Conv2d(4, 4, 3, padding=1, bias=True)
    no_affine = build("block3x3", 4, 2)
    no_affine[1] = nn.BatchNorm2d(4, affine=False)
    mixed = build("res", 4)
    mixed.block[4].eval()
    for m in (up_bias, no_affine, mixed):
        compare(m, x)
    assert len(up_calls) == 2 and len(res_calls) == 1


def test_state_dict_keys_unchanged():
    assert list(upBlock(4, 2).state_dict()) == [
        "1.weight", "2.weight", "2.bias", "2.running_mean", "2.running_var", "2.num_batches_tracked"]
    assert [k for k in ResBlock(4).state_dict() if k.endswith("weight")] == [
        "block.0.weight", "block.1.weight", "block.3.weight", "block.4.weight"]


def test_bad_input_raises_value_error_naming_the_argument():
    x = torch.randn(2, 4, 5, 5)
    bn = BatchNormArgs(torch.ones(6), torch.zeros(6))
    with pytest.raises(ValueError, match="weight: GLU needs an even"):
        up_block(x, torch.randn(5, 4, 3, 3), BatchNormArgs(torch.ones(5), torch.zeros(5)), True)
    with pytest.raises(ValueError, match=r"x: expected \(N, C, H, W\)"):
        up_block(torch.randn(4, 5, 5), torch.randn(6, 4, 3, 3), bn, True)
    with pytest.raises(ValueError, match="x: expected"):
        upBlock(4, 3)(torch.randn(4, 5, 5))
    with pytest.raises(ValueError, match="weight: expected"):
        up_block(x, torch.randn(6, 3, 3, 3), bn, True)
    with pytest.raises(ValueError, match=r"bn.bias: expected shape \(6,\)"):
        up_block(x, torch.randn(6, 4, 3, 3), BatchNormArgs(torch.ones(6), torch.zeros(5)), True)
    with pytest.raises(ValueError, match="bn: running_mean and running_var are required"):
        up_block(x, torch.randn(6, 4, 3, 3), bn, False)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        res_block(torch.randn(1, 4, 1, 1), torch.randn(8, 4, 3, 3), BatchNormArgs(torch.ones(8), torch.zeros(8)),
                  torch.randn(4, 4, 3, 3), BatchNormArgs(torch.ones(4), torch.zeros(4)), True)
    with pytest.raises(ValueError, match="weight2: expected"):
        res_block(x, torch.randn(8, 4, 3, 3), BatchNormArgs(torch.ones(8), torch.zeros(8)),
                  torch.randn(4, 5, 3, 3), BatchNormArgs(torch.ones(4), torch.zeros(4)), True)
    with pytest.raises(TypeError, match=re.escape("weight: expected dtype torch.float32 (that of x), got torch.float64")):
        upsample_conv3x3(x, torch.randn(6, 4, 3, 3, dtype=torch.float64))


def test_unwritten_output_elements_show(monkeypatch):
    """With deterministic mode every empty() is NaN-filled: no output or gradient element is missed."""
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for m, x in ((build("up", 3, 2), torch.randn(2, 3, 3, 5)), (build("res", 3), torch.randn(2, 3, 3, 5))):
            for channels_last in (False, True):
                xi = x.to(memory_format=torch.channels_last) if channels_last else x
                out, grads, _ = run(m, xi, torch.randn_like(m(xi)), "fast")
                assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    finally:
        torch.use_deterministic_algorithms(previous)


# ---- gradcheck, opcheck, compile ----------------------------------------------------------------


def bn_double(c, running):
    stats = (torch.randn(c, dtype=torch.float64), torch.rand(c, dtype=torch.float64) + 0.5) if running else (None, None)
    return (torch.rand(c, dtype=torch.float64, requires_grad=True) + 0.5,
            torch.randn(c, dtype=torch.float64, requires_grad=True)), stats


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("upsample,size", [(True, (3, 2)), (True, (5, 13)), (False, (3, 2))])
def test_up_block_gradcheck(training, upsample, size):
    """(5, 13): 65 pixels, the single-conv phase path; (3, 2) the GEMM one."""
    (gamma, beta), (rm, rv) = bn_double(4, not training)
    x = torch.randn(2 if size == (3, 2) else 1, 3 if size == (3, 2) else 2, *size, dtype=torch.float64,
                    requires_grad=True)
    weight = torch.randn(4, x.shape[1], 3, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, g, b: up_block(x, w, BatchNormArgs(g, b, rm, rv), training, upsample)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, weight, gamma, beta), fast_mode=size != (3, 2))


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


@pytest.mark.parametrize("size", [(3, 2), (5, 13)])
def test_upsample_conv3x3_gradcheck(size):
    x = torch.randn(1, 2, *size, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(upsample_conv3x3, (x, weight), fast_mode=size != (3, 2))


def _op_samples(device="cpu"):
    """(op, args) for every forward and backward op, NCHW and channels_last, train and eval."""
    samples = []
    for channels_last, size in ((False, (3, 4)), (True, (3, 4)), (False, (9, 8))):
        x = input_like(2, 3, *size, channels_last, device=device).requires_grad_()
        w = torch.randn(4, 3, 3, 3, device=device, requires_grad=True)
        g, b = torch.rand(4, device=device, requires_grad=True) + 0.5, torch.randn(4, device=device, requires_grad=True)
        rm, rv = torch.randn(4, device=device), torch.rand(4, device=device) + 0.5
        samples.append((ops.upsample_conv3x3, (x, w)))
        up_out = ops.upsample_conv3x3(x, w)
        samples.append((ops.upsample_conv3x3_backward, (torch.randn_like(up_out), x.detach(), w.detach())))
        for upsample in (True, False):
            for training in (True, False):
                stats = (None, None) if training else (rm, rv)
                args = (x, w, g, b, *stats, upsample, training, 1e-5)
                samples.append((ops.up_block, args))
                out, conv_out, mean, var = ops.up_block(*args)
                samples.append((ops.up_block_backward, (torch.randn_like(out), x.detach(), w.detach(), g.detach(),
                                                        b.detach(), conv_out, mean, var, upsample, training, 1e-5)))
        w1, w2 = torch.randn(6, 3, 3, 3, device=device), torch.randn(3, 3, 3, 3, device=device)
        g1, b1 = torch.rand(6, device=device) + 0.5, torch.randn(6, device=device)
        g2, b2 = torch.rand(3, device=device) + 0.5, torch.randn(3, device=device)
        for p in (w1, w2, g1, b1, g2, b2):
            p.requires_grad_()
        for training in (True, False):
            s1 = (None, None) if training else (torch.randn(6, device=device), torch.rand(6, device=device) + 0.5)
            s2 = (None, None) if training else (torch.randn(3, device=device), torch.rand(3, device=device) + 0.5)
            args = (x, w1, g1, b1, *s1, w2, g2, b2, *s2, training, 1e-5, 1e-3)
            samples.append((ops.res_block, args))
            out, y1, m1, v1, h, y2, m2, v2 = ops.res_block(*args)
            d = [t.detach() for t in (x, w1, g1, b1)]
            samples.append((ops.res_block_backward, (torch.randn_like(out), *d, y1, m1, v1, h, w2.detach(),
                                                     g2.detach(), y2, m2, v2, training, 1e-5, 1e-3)))
    return samples


def test_opcheck_every_op():
    for op, args in _op_samples():
        torch.library.opcheck(op, args)


def test_compile_fullgraph_train_step():
    """upBlock -> ResBlock -> Block3x3_relu in one graph (aot_eager): outputs, grads, running stats."""
    compare_compiled_train_step(nn.Sequential(build("up", 4, 3), build("res", 3), build("block3x3", 3, 2)),
                                torch.randn(2, 4, 3, 5))


def test_compile_inductor_eval():
    compare_compiled_eval(nn.Sequential(build("up", 4, 3), build("res", 3)).eval(), torch.randn(1, 4, 3, 3))


# ---- CUDA ---------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["up", "block3x3", "res"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 2, 5, 7), (1, 64, 32, 8, 8), (4, 32, 16, 16, 16)])
def test_blocks_cuda_match_module(kind, training, channels_last, shape):
    n, ci, co, h, w = shape
    m = build(kind, ci, co, device="cuda").train(training)
    torch.backends.cudnn.allow_tf32 = False
    try:
        compare(m, input_like(n, ci, h, w, channels_last, device="cuda"))
    finally:
        torch.backends.cudnn.allow_tf32 = True


@pytest.mark.cuda
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 7), (1, 1, 1, 1, 1), (2, 16, 8, 9, 4)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_upsample_conv3x3_cuda_float64(shape, channels_last):
    n, ci, co, h, w = shape
    x = input_like(n, ci, h, w, channels_last, torch.float64, "cuda").requires_grad_()
    weight = torch.randn(co, ci, 3, 3, dtype=torch.float64, device="cuda", requires_grad=True)
    out = upsample_conv3x3(x, weight)
    ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)
    grad = torch.randn_like(ref)
    assert_close(out, ref)
    for g, g_ref in zip(torch.autograd.grad(out, [x, weight], grad), torch.autograd.grad(ref, [x, weight], grad)):
        assert_close(g, g_ref)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["up", "res"])
def test_blocks_cuda_low_precision(kind, dtype):
    m = build(kind, 16, 8, device="cuda")
    x = torch.randn(4, 16, 8, 8, device="cuda")
    with torch.no_grad(), attngan_fast.backend("fast"):
        fast = copy.deepcopy(m).to(dtype)(x.to(dtype))
    with torch.no_grad(), attngan_fast.backend("reference"):
        plain = copy.deepcopy(m).to(dtype)(x.to(dtype))
        exact = copy.deepcopy(m).double()(x.double())
    assert_low_precision_ok(fast, plain, exact, name=kind)


@pytest.mark.cuda
def test_opcheck_every_op_cuda():
    for op, args in _op_samples("cuda"):
        torch.library.opcheck(op, args)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["up", "res"])
def test_blocks_under_autocast_match_the_reference(kind, dtype):
    m = build(kind, 8, 4)
    x = torch.randn(2, 8, 6, 5, requires_grad=True)
    outs = {}
    for name in ("fast", "reference"):
        net = copy.deepcopy(m)
        with attngan_fast.backend(name), torch.autocast("cpu", dtype=dtype):
            y = net(x)
        (gx,) = torch.autograd.grad(y.float().square().sum(), x)
        outs[name] = (y, gx, net.state_dict())
    (y, gx, sd), (y_ref, gx_ref, sd_ref) = outs["fast"], outs["reference"]
    assert y.dtype == y_ref.dtype == (torch.float32 if kind == "res" else dtype)  # the residual sum promotes
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx, gx_ref, rtol=5e-2, atol=5e-2)
    for k in sd:
        assert sd[k].dtype == sd_ref[k].dtype, k
        torch.testing.assert_close(sd[k].float(), sd_ref[k].float(), rtol=2e-2, atol=2e-2)
