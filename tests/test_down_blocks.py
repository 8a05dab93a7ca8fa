"""The fused discriminator blocks (attngan_fast.ops.down_blocks) against their reference twins.

Reference: ``attngan_fast.reference.down_block`` (F.conv2d -> F.batch_norm -> F.leaky_relu) and the
plain ``nn.Sequential`` forward of the D blocks (``backend("reference")``). Compared: outputs, the
gradients of the input, conv weight and BatchNorm affine parameters, running statistics and
num_batches_tracked, train and eval, NCHW and channels_last; then a whole D_NET256 pass and one
GAN training step. The CPU kernel's shape limits (output maps of <= 16 pixels, convs of >= 2^26
multiply-adds) are lifted here (``all_shapes``) so that every case runs the kernel;
``test_dispatch_by_shape`` checks them.
"""
import copy
import warnings

import pytest
import torch
import torch.nn as nn

import attngan_fast
from attngan_fast import config, reference
from attngan_fast.models import D_NET256, Block3x3_leakRelu, discriminator, downBlock, encode_image_by_16times
from attngan_fast.models import blocks as model_blocks
from attngan_fast.ops import BatchNormArgs, down_block, tiled_code_conv
from attngan_fast.ops import down_blocks as down_ops
from tests.kernel_checks import assert_close
from tests.test_blocks import (
    assert_buffers_equal,
    assert_grad_close,
    compare,
    compare_compiled_eval,
    compare_compiled_train_step,
    compare_low_precision,
    compare_running_stats,
    input_like,
    run,
)
from tests.training_helpers import make_trainer, single_thread

ops = torch.ops.attngan_fast


@pytest.fixture(autouse=True)
def all_shapes(request, monkeypatch):
    """The CPU kernel for every output size (its dispatch limit lifted), except where a test checks the limit."""
    if "keep_limit" not in request.keywords:
        monkeypatch.setattr(down_ops, "CPU_MAX_OUTPUT_PIXELS", 1 << 30)
        monkeypatch.setattr(down_ops, "CPU_MIN_MACS", 0)

KINDS = {  # kind -> (kernel, stride, padding, batch norm)
    "down": (4, 2, 1, True),
    "block3x3": (3, 1, 1, True),
    "first": (4, 2, 1, False),  # encode_image_by_16times' first conv: no BatchNorm
}


def build(kind: str, ci: int, co: int, dtype: torch.dtype = torch.float32, device: str = "cpu") -> nn.Module:
    """downBlock / Block3x3_leakRelu / [conv 4x4 s2, LeakyReLU] with random BN affine and running stats."""
    if kind == "first":
        m = model_blocks.DownBlock.from_modules(nn.Conv2d(ci, co, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True))
    else:
        m = downBlock(ci, co) if kind == "down" else Block3x3_leakRelu(ci, co)
    _randomize_bn(m)
    return m.to(device=device, dtype=dtype)


def _randomize_bn(m: nn.Module) -> None:
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.5)
                bn.running_mean.normal_(0.0, 0.5)
                bn.running_var.uniform_(0.5, 2.0)


# ---- the blocks against the modules -------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 9), (3, 6, 10, 2, 2), (2, 5, 3, 13, 5), (2, 16, 24, 8, 8),
                                   (1, 7, 3, 6, 5)])
def test_blocks_match_modules(kind, training, channels_last, shape):
    """Odd sizes, 2x2 maps (1x1 after the stride-2 conv), channels not a power of two, batch 1."""
    n, ci, co, h, w = shape
    out_pixels = n * (h // 2) * (w // 2) if KINDS[kind][1] == 2 else n * h * w
    if training and KINDS[kind][3] and out_pixels <= 1:
        pytest.skip("train-mode BatchNorm needs more than 1 value per channel")
    compare(build(kind, ci, co).train(training), input_like(n, ci, h, w, channels_last))


def test_image_encoder_matches_module():
    """encode_image_by_16times: four fused runs, the first without BatchNorm."""
    m = encode_image_by_16times(3)
    _randomize_bn(m)
    for channels_last in (False, True):
        compare(m.train(), input_like(2, 3, 32, 32, channels_last))
        compare(m.eval(), input_like(1, 3, 16, 16, channels_last))


@pytest.mark.parametrize("momentum", [None, 0.3])
def test_running_stats_over_steps(momentum):
    compare_running_stats(build("down", 4, 3), 1, (2, 4, 6, 4), momentum)


def test_without_running_stats():
    """track_running_stats=False: batch statistics in train and eval mode, no buffers."""
    m = downBlock(3, 2)
    m[1] = nn.BatchNorm2d(2, track_running_stats=False)
    compare(m.train(), torch.randn(2, 3, 6, 6))
    compare(m.eval(), torch.randn(2, 3, 6, 6))


def test_op_matches_reference_twin_with_addend_and_other_geometry():
    """stride 3, padding 2, kernel 5, slope 0.1, an addend: the op's arguments are honoured."""
    x = torch.randn(2, 3, 11, 9, requires_grad=True)
    w = torch.randn(4, 3, 5, 5, requires_grad=True)
    addend = torch.randn(2, 4, 4, 3, requires_grad=True)
    gamma, beta = torch.rand(4, requires_grad=True), torch.randn(4, requires_grad=True)
    for bn in (BatchNormArgs(gamma, beta), None):
        outs = [fn(x, w, bn, True, 3, 2, 0.1, addend) for fn in (down_block, reference.down_block)]
        grad = torch.randn_like(outs[1])
        ins = [x, w, addend] + ([gamma, beta] if bn is not None else [])
        grads = [torch.autograd.grad(o, ins, grad) for o in outs]
        assert_close(outs[0], outs[1], name="out")
        for name, a, b in zip(["x", "w", "addend", "gamma", "beta"], *grads):
            assert_grad_close(a, b, name)


def test_no_input_grad_when_x_does_not_need_it():
    """The backward skips grad_x (the D's first conv on images) and still gives the weight grad."""
    m = build("first", 3, 4)
    x = torch.randn(2, 3, 8, 8)
    with attngan_fast.backend("fast"):
        out = m(x)
    (gw,) = torch.autograd.grad(out.sum(), [m[0].weight])
    with attngan_fast.backend("reference"):
        (gw_ref,) = torch.autograd.grad(m(x).sum(), [m[0].weight])
    assert_grad_close(gw, gw_ref, "weight")


# ---- D_GET_LOGITS: the tiled sentence code ------------------------------------------------------


@pytest.mark.parametrize("size,k,padding", [((4, 4), 3, 1), ((5, 3), 3, 1), ((4, 4), 3, 0), ((2, 6), 5, 2)])
def test_tiled_code_conv_is_exact(size, k, padding):
    code = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, k, k, dtype=torch.float64, requires_grad=True)
    out, ref = tiled_code_conv(code, w, size, padding), reference.tiled_code_conv(code, w, size, padding)
    assert_close(out, ref)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, [code, w], grad), torch.autograd.grad(ref, [code, w], grad)):
        assert_close(a, b)


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_d_get_logits_conditional_head(training, kernel, monkeypatch):
    """COND_DNET: jointConv on cat(h, tiled code) through the op on h plus the code's share (the
    module's children where the kernel does not take the shape); outlogits as a matrix product."""
    if not kernel:
        monkeypatch.setattr(down_ops, "CPU_MIN_MACS", 1 << 40)
    cfg = config.load("bird_attn2", **{"GAN.DF_DIM": 3, "TEXT.EMBEDDING_DIM": 10})
    net = D_NET256(cfg)
    _randomize_bn(net)
    head = net.COND_DNET.train(training)
    h = torch.randn(3, 24, 4, 4, requires_grad=True)
    c = torch.randn(3, 10, requires_grad=True)
    calls = []
    real = discriminator.run_down_block
    monkeypatch.setattr(discriminator, "run_down_block", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    logits = []
    real_linear = torch.nn.functional.linear
    monkeypatch.setattr(discriminator.F, "linear", lambda *a, **k: (logits.append(1), real_linear(*a, **k))[1])
    results = {}
    for name in ("fast", "reference"):
        m = copy.deepcopy(head)
        with attngan_fast.backend(name), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = m(h, c)
        if name == "fast":
            assert (len(calls), len(logits)) == (int(kernel), 1)
        params = dict(m.named_parameters())
        grads = torch.autograd.grad(out.sum(), [h, c, *params.values()])
        results[name] = out, dict(zip(["h", "c", *params], grads)), dict(m.named_buffers())
    (out, grads, bufs), (out_ref, grads_ref, bufs_ref) = results["fast"], results["reference"]
    assert_close(out, out_ref, name="out")
    for k in grads_ref:
        assert_grad_close(grads[k], grads_ref[k], k)
    assert_buffers_equal(bufs, bufs_ref)


# ---- a whole discriminator and one training step ------------------------------------------------


@pytest.mark.parametrize("channels_last", [False, True])
def test_d_net256_train_pass_matches_reference(channels_last):
    """Forward + backward of D_NET256 (image features, both heads), train mode: outputs and every
    parameter's gradient within 1e-5 of their magnitude, running statistics equal."""
    cfg = config.load("bird_attn2", **{"GAN.DF_DIM": 2, "TEXT.EMBEDDING_DIM": 6})
    torch.manual_seed(0)
    net = D_NET256(cfg)
    _randomize_bn(net)
    x = input_like(2, 3, 256, 256, channels_last)
    c = torch.randn(2, 6)
    results = {}
    with single_thread():
        for name in ("fast", "reference"):
            m = copy.deepcopy(net).train()
            with attngan_fast.backend(name):
                feats = m(x)
                outs = (feats, m.COND_DNET(feats, c), m.UNCOND_DNET(feats))
            loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
            loss.backward()
            results[name] = outs, {k: p.grad for k, p in m.named_parameters()}, dict(m.named_buffers())
    (outs, grads, bufs), (outs_ref, grads_ref, bufs_ref) = results["fast"], results["reference"]
    for i, (a, b) in enumerate(zip(outs, outs_ref)):
        assert_close(a, b, name=f"output {i}")
    for k in grads_ref:
        assert_grad_close(grads[k], grads_ref[k], k)
    assert_buffers_equal(bufs, bufs_ref)


def test_gan_training_step_matches_between_backends(tmp_path):
    """One step of the tiny 2-stage trainer (D64, D128 with the fused D kernel for every block; G's
    fused blocks too): the losses, then every D and G parameter after the optimizer steps."""
    logs, models = {}, {}
    with single_thread():
        for name in ("fast", "reference"):
            trainer = make_trainer(tmp_path / name)
            batch = next(iter(trainer._loader(0)))
            with attngan_fast.backend(name):
                logs[name] = trainer.train_step(batch)
            models[name] = [*trainer.netsD, trainer.netG]
    for k in logs["reference"]:
        torch.testing.assert_close(logs["fast"][k], logs["reference"][k], rtol=1e-4, atol=1e-5,
                                   msg=lambda m, k=k: f"{k}: {m}")
    for m_fast, m_ref in zip(models["fast"], models["reference"]):
        for (k, a), b in zip(m_fast.state_dict().items(), m_ref.state_dict().values()):
            torch.testing.assert_close(a.float(), b.float(), rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


# ---- dtypes, autocast ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["down", "first"])
def test_low_precision(kind, dtype):
    compare_low_precision(build(kind, 8, 6), torch.randn(2, 8, 10, 6), dtype, kind)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_under_autocast_matches_the_reference(dtype):
    m = build("down", 8, 4)
    x = torch.randn(2, 8, 6, 6, requires_grad=True)
    outs = {}
    for name in ("fast", "reference"):
        net = copy.deepcopy(m)
        with attngan_fast.backend(name), torch.autocast("cpu", dtype=dtype):
            y = net(x)
        (gx,) = torch.autograd.grad(y.float().square().sum(), x)
        outs[name] = (y, gx, net.state_dict())
    (y, gx, sd), (y_ref, gx_ref, sd_ref) = outs["fast"], outs["reference"]
    assert y.dtype == y_ref.dtype
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(gx, gx_ref, rtol=5e-2, atol=5e-2)
    for k in sd:
        assert sd[k].dtype == sd_ref[k].dtype, k
        torch.testing.assert_close(sd[k].float(), sd_ref[k].float(), rtol=2e-2, atol=2e-2)


# ---- dispatch and bad input ---------------------------------------------------------------------


def test_modules_dispatch_and_fall_back(monkeypatch):
    calls = []
    real = model_blocks.down_block
    monkeypatch.setattr(model_blocks, "down_block", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    x = torch.randn(2, 4, 6, 6)
    with attngan_fast.backend("reference"):
        build("down", 4, 3)(x)
    assert calls == []
    build("down", 4, 3)(x)
    build("block3x3", 4, 3)(x)
    assert len(calls) == 2
    # configurations the fused op does not cover run the plain modules
    bias = build("down", 4, 3)
    bias[0] = nn.Conv2d(4, 3, 4, 2, 1, bias=True)
    no_affine = build("block3x3", 4, 3)
    no_affine[1] = nn.BatchNorm2d(3, affine=False)
    relu = build("down", 4, 3)
    relu[2] = nn.ReLU()
    for m in (bias, no_affine, relu):
        compare(m, x)
    assert len(calls) == 2


def test_state_dict_keys_unchanged():
    assert list(downBlock(4, 2).state_dict()) == [
        "0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert [k for k in encode_image_by_16times(2).state_dict() if k.endswith("weight")] == [
        "0.weight", "2.weight", "3.weight", "5.weight", "6.weight", "8.weight", "9.weight"]


def test_bad_input_raises_naming_the_argument():
    x = torch.randn(2, 4, 6, 6)
    bn = BatchNormArgs(torch.ones(3), torch.zeros(3))
    w = torch.randn(3, 4, 4, 4)
    with pytest.raises(ValueError, match=r"x: expected \(N, C, H, W\)"):
        down_block(torch.randn(4, 6, 6), w, bn, True)
    with pytest.raises(TypeError, match=r"weight: expected dtype torch.float32 \(that of x\)"):
        down_block(x, w.double(), bn, True)
    with pytest.raises(ValueError, match=r"weight: expected \(Co, 4, K, K\)"):
        down_block(x, torch.randn(3, 5, 4, 4), bn, True)
    with pytest.raises(ValueError, match="negative_slope"):
        down_block(x, w, bn, True, negative_slope=0.0)
    with pytest.raises(ValueError, match="x: expected a map of at least 4x4 for a 4x4 conv with stride 2 and padding 0"):
        down_block(torch.randn(2, 4, 3, 3), w, bn, True, padding=0)
    with pytest.raises(ValueError, match=r"addend: expected shape \(2, 3, 3, 3\)"):
        down_block(x, w, bn, True, addend=torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"bn.weight: expected shape \(3,\)"):
        down_block(x, w, BatchNormArgs(torch.ones(4), torch.zeros(3)), True)
    with pytest.raises(ValueError, match="bn: running_mean and running_var are required"):
        down_block(x, w, bn, False)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        down_block(torch.randn(1, 4, 2, 2), w, bn, True)
    with pytest.raises(ValueError, match="stride, padding"):
        down_block(x, w, bn, True, stride=0)
    with pytest.raises(ValueError, match="code, weight"):
        tiled_code_conv(torch.randn(2, 5), torch.randn(3, 4, 3, 3), (4, 4), 1)


def test_unwritten_output_elements_show(monkeypatch):
    """With deterministic mode every empty() is NaN-filled: no output or gradient element is missed."""
    monkeypatch.setattr(torch.utils.deterministic, "fill_uninitialized_memory", True)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        for kind in KINDS:
            m = build(kind, 3, 5)
            for channels_last in (False, True):
                x = input_like(2, 3, 7, 6, channels_last)
                out, grads, _ = run(m, x, torch.randn_like(m(x)), "fast")
                assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values())
    finally:
        torch.use_deterministic_algorithms(previous)


# ---- gradcheck, opcheck, compile ----------------------------------------------------------------


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradcheck(kind, training, channels_last):
    k, stride, padding, has_bn = KINDS[kind]
    if not has_bn and not training:
        pytest.skip("no BatchNorm: training does not matter")
    x = input_like(2, 3, 5, 4, channels_last, torch.float64).requires_grad_()
    w = torch.randn(4, 3, k, k, dtype=torch.float64, requires_grad=True)
    gamma = torch.rand(4, dtype=torch.float64, requires_grad=True) + 0.5
    beta = torch.randn(4, dtype=torch.float64, requires_grad=True)
    f64 = torch.float64
    rm, rv = (None, None) if training else (torch.randn(4, dtype=f64), torch.rand(4, dtype=f64) + 0.5)

    def fn(x, w, g, b):
        bn = BatchNormArgs(g, b, rm, rv) if has_bn else None
        return down_block(x, w, bn, training, stride, padding)

    assert torch.autograd.gradcheck(fn, (x, w, gamma, beta))


def _op_samples(device="cpu"):
    """(op, args) for the forward and backward ops: NCHW / channels_last, train / eval, no BN, addend."""
    samples = []
    for channels_last in (False, True):
        x = input_like(2, 3, 6, 5, channels_last, device=device).requires_grad_()
        w = torch.randn(4, 3, 4, 4, device=device, requires_grad=True)
        g, b = torch.rand(4, device=device, requires_grad=True) + 0.5, torch.randn(4, device=device, requires_grad=True)
        rm, rv = torch.randn(4, device=device), torch.rand(4, device=device) + 0.5
        addend = torch.randn(2, 4, 3, 2, device=device, requires_grad=True)
        none = (None, None)
        for bn, stats, add in (((g, b), none, None), ((g, b), (rm, rv), addend), (none, none, None)):
            training = stats[0] is None
            args = (x, w, add, *bn, *stats, 2, 1, training, 1e-5, 0.2)
            samples.append((ops.down_block, args))
            out, conv_out, mean, var = ops.down_block(*args)
            saved = conv_out if bn[0] is not None else out
            d = [t.detach() if t is not None else None for t in bn]
            for mask in ([True, True, add is not None], [False, True, False]):
                samples.append((ops.down_block_backward, (torch.randn_like(out), x.detach(), w.detach(), *d,
                                                          saved.detach(), mean, var, 2, 1, training, 1e-5, 0.2, mask)))
    return samples


def test_opcheck_every_op():
    for op, args in _op_samples():
        torch.library.opcheck(op, args)


def test_compile_fullgraph_train_step():
    """encode_image_by_16times -> downBlock -> Block3x3_leakRelu in one graph (aot_eager)."""
    model = nn.Sequential(encode_image_by_16times(2), build("down", 16, 8), build("block3x3", 8, 4))
    _randomize_bn(model)
    compare_compiled_train_step(model, torch.randn(2, 3, 64, 64))


def test_compile_inductor_eval():
    compare_compiled_eval(nn.Sequential(build("first", 3, 4), build("down", 4, 6)).eval(), torch.randn(1, 3, 8, 8))


# ---- dispatch by output size, double backward -------------------------------------------------


@pytest.mark.keep_limit
def test_dispatch_by_shape(monkeypatch):
    """The CPU kernel runs for output maps of <= 16 pixels and convs of >= CPU_MIN_MACS multiply-adds
    (NCHW_MACS_FACTOR times as many on NCHW inputs); the others run the reference (same results), the
    modules their own children."""
    used = []
    real = down_ops.use_kernel
    monkeypatch.setattr(down_ops, "use_kernel", lambda *a: (used.append(real(*a)), used[-1])[1])
    bn = BatchNormArgs(torch.ones(3), torch.zeros(3))
    w = torch.randn(3, 4, 4, 4)
    for size, min_macs in (((8, 8), 0), ((10, 8), 0), ((8, 8), 2 * 16 * w.numel() + 1)):
        monkeypatch.setattr(down_ops, "CPU_MIN_MACS", min_macs)  # 4x4 output: the kernel; 5x4 or too few MACs: not
        x = torch.randn(2, 4, *size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = down_block(x, w, bn, True)
        assert_close(out, reference.down_block(x, w, bn, True))
    assert used == [True, False, False]
    monkeypatch.setattr(down_ops, "CPU_MIN_MACS", 1 << 26)
    calls = []
    monkeypatch.setattr(model_blocks, "down_block", lambda *a, **k: (calls.append(1), down_block(*a, **k))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compare(build("down", 32, 64), torch.randn(8, 32, 8, 8))  # the demo's 4x4 block: 4 MMAC
        compare(build("down", 256, 512), torch.randn(2, 256, 8, 8))  # 67 MMAC: enough channels_last only
        compare(build("down", 256, 512), torch.randn(2, 256, 8, 8).to(memory_format=torch.channels_last))
    assert len(calls) == 1  # the fast forward of the last only (compare runs each backend once)


@pytest.mark.parametrize("has_bn", [True, False])
def test_gradgradcheck(has_bn):
    """The gradient is differentiable (the reference's vector-Jacobian product under create_graph)."""
    f64 = torch.float64
    x = torch.randn(2, 3, 6, 6, dtype=f64, requires_grad=True)
    w = torch.randn(4, 3, 4, 4, dtype=f64, requires_grad=True)
    g, b = torch.rand(4, dtype=f64, requires_grad=True) + 0.5, torch.randn(4, dtype=f64, requires_grad=True)
    addend = torch.randn(2, 4, 3, 3, dtype=f64, requires_grad=True)

    def fn(x, w, g, b, a):
        return down_block(x, w, BatchNormArgs(g, b) if has_bn else None, True, addend=a)

    assert torch.autograd.gradgradcheck(fn, (x, w, g, b, addend))


# ---- CUDA ---------------------------------------------------------------------------------------


@pytest.mark.cuda
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape", [(2, 3, 5, 7, 9), (1, 64, 40, 8, 8), (4, 32, 16, 16, 16)])
def test_blocks_cuda_match_modules(kind, training, channels_last, shape):
    n, ci, co, h, w = shape
    if training and n * (h // 2) * (w // 2) <= 1:
        pytest.skip("train-mode BatchNorm needs more than 1 value per channel")
    m = build(kind, ci, co, device="cuda").train(training)
    torch.backends.cudnn.allow_tf32 = False
    try:
        compare(m, input_like(n, ci, h, w, channels_last, device="cuda"))
    finally:
        torch.backends.cudnn.allow_tf32 = True


@pytest.mark.cuda
@pytest.mark.parametrize("kind", list(KINDS))
def test_gradcheck_cuda(kind):
    k, stride, padding, has_bn = KINDS[kind]
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    w = torch.randn(4, 3, k, k, dtype=torch.float64, device="cuda", requires_grad=True)
    gamma = torch.rand(4, dtype=torch.float64, device="cuda", requires_grad=True)
    beta = torch.randn(4, dtype=torch.float64, device="cuda", requires_grad=True)

    def fn(x, w, g, b):
        return down_block(x, w, BatchNormArgs(g, b) if has_bn else None, True, stride, padding)

    assert torch.autograd.gradcheck(fn, (x, w, gamma, beta))


@pytest.mark.cuda
def test_opcheck_every_op_cuda():
    for op, args in _op_samples("cuda"):
        torch.library.opcheck(op, args)
