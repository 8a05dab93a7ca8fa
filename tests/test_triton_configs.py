"""Every config the GPU would run, executed in Triton's interpreter against the reference.

On a GPU the attention kernels autotune among ``configs_for(backward, fp32_dot)`` (kernels/attention.py:
the fp32 lists are pruned) and DAMSM's launcher picks its tiles by D, T and dtype (``launch_config``,
kernels/damsm.py); the interpreter tests of test_attention.py / test_damsm.py run one config.
Here each config of each dtype's list runs (the autotuner restricted to it; fp16 stands for bf16,
whose interpreter dot is not the GPU's), at shapes that leave partial tiles for its block sizes:
Q = 289 regions (not a multiple of any BLOCK_Q), C = 20 / 80 channels (a partial BLOCK_C tile, one
and three chunks), T = 7 / 33 words (partial BLOCK_T), N = 35 regions (partial BLOCK_N = 16 and 32
tiles), D not a power of two. The reference: the public ops under
``attngan_fast.backend("reference")`` in float64 from the same values.
"""
from __future__ import annotations

import itertools

import pytest
import torch

import attngan_fast
from attngan_fast.ops import damsm_word_similarity, word_region_attention

triton = pytest.importorskip("triton")
attention = pytest.importorskip("attngan_fast.kernels.attention")
damsm = pytest.importorskip("attngan_fast.kernels.damsm")

G1, G2 = 4.0, 5.0  # bird_attn2's GAMMA1, GAMMA2


def _config_id(cfg: "triton.Config") -> str:
    return "-".join(f"{k}{v}" for k, v in cfg.kwargs.items()) + f"-w{cfg.num_warps}"


def _dtype_configs(backward: bool) -> list:
    """(dtype, config) for every config the GPU autotunes among: fp32's list, and fp16's (= bf16's)."""
    return [pytest.param(dtype, cfg, id=f"{str(dtype)[6:]}-{_config_id(cfg)}")
            for dtype in (torch.float32, torch.float16) for cfg in attention.configs_for(backward, dtype == torch.float32)]


@pytest.fixture
def only_config(monkeypatch):
    """only_config(kernel, cfg): the autotuned ``kernel`` runs ``cfg`` (a single config is not tuned)."""

    def restrict(kernel, cfg):
        monkeypatch.setattr(kernel, "configs", [cfg])
        monkeypatch.setattr(kernel, "cache", {})

    return restrict


def assert_fp32_close(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """fp32 against float64: 1e-5 of the tensor's largest magnitude, 1e-4 relative."""
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double(), expected, atol=1e-5 * scale, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def assert_close_in(dtype: torch.dtype, actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """fp32 as ``assert_fp32_close``; 16-bit: the dots' operands are rounded to the input dtype (1e-2 of the scale)."""
    if dtype == torch.float32:
        return assert_fp32_close(actual, expected, name)
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(actual.double(), expected, atol=1e-2 * scale, rtol=5e-2, msg=lambda m: f"{name}: {m}")


# ---- word-region attention -----------------------------------------------------------------------

# (B, C, H, W, T, lens): Q = 289 and 65; C = 20 (one BLOCK_C = 32 chunk) and 80 (three chunks, the
# backward's slot read-modify-write); T = 7 (BLOCK_T 16) and 33 (BLOCK_T 64), masked and not.
ATTENTION_SHAPES = [(2, 20, 17, 17, 7, [7, 3]), (1, 80, 5, 13, 33, None)]


def _attention_inputs(B, C, H, W, T, lens, dtype):
    h, words = torch.randn(B, C, H, W).to(dtype), torch.randn(B, C, T).to(dtype)
    mask = None if lens is None else torch.arange(T)[None, :] >= torch.tensor(lens)[:, None]
    return h, words, mask


def _attention_reference(h, words, mask, grad_ctx, grad_weights):
    h, words = h.double().requires_grad_(), words.double().requires_grad_()
    with attngan_fast.backend("reference"):
        ctx, weights = word_region_attention(h, words, mask, need_weights=True)
    loss = (ctx * grad_ctx.double()).sum() + (weights * grad_weights.double()).sum()
    return (ctx.detach(), weights.detach(), *torch.autograd.grad(loss, (h, words)))


@pytest.mark.parametrize("backward", [False, True])
def test_attention_autotuner_prunes_to_the_dtypes_configs(backward, monkeypatch):
    """On a GPU the autotuner's early_config_prune keeps configs_for(backward, FP32_DOT) of its list."""
    kernel = attention._backward_kernel if backward else attention._forward_kernel
    monkeypatch.setattr(attention, "_INTERPRET", False)
    every = attention.BACKWARD_CONFIGS if backward else attention.FORWARD_CONFIGS
    for fp32_dot in (True, False):
        kept = kernel.early_config_prune(every, {}, FP32_DOT=fp32_dot)
        assert kept == attention.configs_for(backward, fp32_dot) and kept
    assert len(attention.configs_for(backward, True)) < len(every)


@pytest.mark.parametrize("dtype,cfg", _dtype_configs(backward=False))
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=["masked-Q289-C20-T7", "Q65-C80-T33"])
def test_attention_forward_config(dtype, cfg, shape, only_config):
    only_config(attention._forward_kernel, cfg)
    h, words, mask = _attention_inputs(*shape, dtype)
    ctx, weights = attention.word_region_attention_forward(h, words, mask, True)
    ctx_ref, weights_ref, _, _ = _attention_reference(h, words, mask, torch.zeros_like(h),
                                                     torch.zeros(shape[0], shape[4], *shape[2:4]))
    assert_close_in(dtype, ctx, ctx_ref, "context")
    assert_close_in(dtype, weights, weights_ref, "weights")


@pytest.mark.parametrize("dtype,cfg", _dtype_configs(backward=True))
@pytest.mark.parametrize("shape", ATTENTION_SHAPES, ids=["masked-Q289-C20-T7", "Q65-C80-T33"])
@pytest.mark.parametrize("with_grad_weights", [True, False])
def test_attention_backward_config(dtype, cfg, shape, with_grad_weights, only_config):
    only_config(attention._backward_kernel, cfg)
    h, words, mask = _attention_inputs(*shape, dtype)
    grad_ctx = torch.randn_like(h)
    grad_weights = torch.randn(shape[0], shape[4], *shape[2:4]).to(dtype) if with_grad_weights else torch.zeros(0)
    grad_h, grad_words = attention.word_region_attention_backward(
        grad_ctx, grad_weights if with_grad_weights else None, h, words, mask)
    ref_weights = grad_weights if with_grad_weights else torch.zeros(shape[0], shape[4], *shape[2:4])
    _, _, grad_h_ref, grad_words_ref = _attention_reference(h, words, mask, grad_ctx, ref_weights)
    assert_close_in(dtype, grad_h, grad_h_ref, "grad_h")
    assert_close_in(dtype, grad_words, grad_words_ref, "grad_words")


# ---- DAMSM word similarity -----------------------------------------------------------------------

# (dtype, D, T, lens, H, W): every (BLOCK_N, num_warps, num_stages) that launch_config produces
# (checked below), with partial D / T / N tiles. bf16 shares its tiles with fp16 (the interpreter's
# bf16 dot is not the GPU's, so fp16 stands for both).
DAMSM_CASES = [
    (torch.float32, 20, 7, [7, 2], 5, 7),     # BLOCK_D 64, BLOCK_T 32, BLOCK_N 16, 4 warps
    (torch.float32, 100, 7, [3, 7], 5, 7),    # BLOCK_D 128, BLOCK_N 16, 8 warps
    (torch.float32, 200, 33, [33, 5], 5, 7),  # BLOCK_D 256, BLOCK_T 64, BLOCK_N 16, 8 warps, 1 stage
    (torch.float16, 20, 7, [4, 7], 5, 7),     # BLOCK_N 32, 4 warps
    (torch.float16, 100, 33, [1, 33], 5, 7),  # BLOCK_D 128, BLOCK_T 64, BLOCK_N 32, 8 warps
    (torch.float16, 250, 40, [40, 6], 5, 7),  # BLOCK_D 256, BLOCK_T 64, BLOCK_N 32, 8 warps, 1 stage
]


def _damsm_tiles(dtype, D, T):
    """What launch_config picks besides the buckets, forward and backward (the interpreter runs both)."""
    return tuple((cfg["BLOCK_N"], cfg["num_warps"], cfg["num_stages"])
                 for cfg in (damsm.launch_config(D, T, dtype, backward) for backward in (False, True)))


def test_damsm_cases_cover_every_launch_config():
    """The cases below run every (BLOCK_N, num_warps, num_stages) the launchers can pick (T <= 64, D <= 256)."""
    produced = {_damsm_tiles(dtype, d, t) for dtype, d, t in itertools.product(
        (torch.float32, torch.float16, torch.bfloat16), range(1, damsm.MAX_D + 1), range(1, damsm.MAX_T + 1))}
    covered = {_damsm_tiles(dtype, d, t) for dtype, d, t, *_ in DAMSM_CASES}
    assert produced <= covered, produced - covered


@pytest.mark.parametrize("dtype,D,T,lens,H,W", DAMSM_CASES,
                         ids=[f"{str(c[0])[6:]}-D{c[1]}-T{c[2]}" for c in DAMSM_CASES])
def test_damsm_config(dtype, D, T, lens, H, W):
    B = len(lens)
    words, regions = torch.randn(B, D, T).to(dtype), torch.randn(B, D, H, W).to(dtype)
    cap_lens = torch.tensor(lens)
    grad_sim = torch.randn(B, B)
    sim, attn = damsm.damsm_word_similarity_forward(words, cap_lens, regions, G1, G2, True)
    grad_words, grad_regions = damsm.damsm_word_similarity_backward(grad_sim, words, cap_lens, regions, G1, G2)

    w64, r64 = words.double().requires_grad_(), regions.double().requires_grad_()
    with attngan_fast.backend("reference"):
        sim_ref, attn_ref = damsm_word_similarity(w64, cap_lens, r64, G1, G2, need_attention=True)
    grad_words_ref, grad_regions_ref = torch.autograd.grad(sim_ref, (w64, r64), grad_sim.double())
    for name, got, ref in (("sim", sim, sim_ref), ("attn", attn, attn_ref), ("grad_words", grad_words, grad_words_ref),
                           ("grad_regions", grad_regions, grad_regions_ref)):
        ref = ref.detach()
        if dtype == torch.float32:
            assert_fp32_close(got, ref, name)
        else:  # 16-bit: the dots' operands (words, regions, probabilities) are rounded to the input dtype
            scale = max(1.0, ref.abs().max().item())
            torch.testing.assert_close(got.double(), ref, atol=1e-2 * scale, rtol=5e-2,
                                       msg=lambda m, name=name: f"{name}: {m}")
