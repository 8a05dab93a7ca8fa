"""Second derivatives through the fused ops (gradgradcheck in float64: through the reference's
autograd, never zeros) and the edges where fast and reference must agree: NaN in masked words,
BatchNorm parameters of another dtype."""
from __future__ import annotations

import pytest
import torch

import attngan_fast
from attngan_fast import ops
from attngan_fast.ops import BatchNormArgs

D = torch.float64


def bn_args(channels: int, training: bool) -> BatchNormArgs:
    weight = (torch.rand(channels, dtype=D) + 0.5).requires_grad_()
    bias = (torch.randn(channels, dtype=D) * 0.1).requires_grad_()
    if training:
        return BatchNormArgs(weight, bias)
    return BatchNormArgs(weight, bias, torch.randn(channels, dtype=D) * 0.1, torch.rand(channels, dtype=D) + 0.5)


def test_word_region_attention_second_derivative():
    h = torch.randn(2, 3, 3, 2, dtype=D, requires_grad=True)
    words = torch.randn(2, 3, 4, dtype=D, requires_grad=True)
    mask = torch.tensor([[False, False, True, True], [False, False, False, False]])

    def f(h_, w_):
        context, weights = ops.word_region_attention(h_, w_, mask, need_weights=True)
        return context, weights

    assert torch.autograd.gradgradcheck(f, (h, words))


def test_damsm_word_similarity_second_derivative():
    words = torch.randn(3, 4, 5, dtype=D, requires_grad=True)
    regions = torch.randn(3, 4, 2, 3, dtype=D, requires_grad=True)
    lens = torch.tensor([5, 2, 3])
    assert torch.autograd.gradgradcheck(lambda w, r: ops.damsm_word_similarity(w, lens, r, 4.0, 5.0)[0],
                                        (words, regions))


def test_upsample_conv3x3_second_derivative():
    x = torch.randn(2, 3, 3, 2, dtype=D, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=D, requires_grad=True)
    assert torch.autograd.gradgradcheck(ops.upsample_conv3x3, (x, w))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("upsample", [True, False])
def test_up_block_second_derivative(training, upsample):
    x = torch.randn(2, 3, 3, 2, dtype=D, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=D, requires_grad=True)
    bn = bn_args(4, training)
    assert torch.autograd.gradgradcheck(
        lambda x_, w_, g_, b_: ops.up_block(x_, w_, BatchNormArgs(g_, b_, bn.running_mean, bn.running_var),
                                            training, upsample), (x, w, bn.weight, bn.bias))


@pytest.mark.parametrize("training", [True, False])
def test_res_block_second_derivative(training):
    x = torch.randn(2, 2, 3, 2, dtype=D, requires_grad=True)
    w1 = torch.randn(4, 2, 3, 3, dtype=D, requires_grad=True)
    w2 = torch.randn(2, 2, 3, 3, dtype=D, requires_grad=True)
    bn1, bn2 = bn_args(4, training), bn_args(2, training)

    def f(x_, w1_, g1, b1, w2_, g2, b2):
        return ops.res_block(x_, w1_, BatchNormArgs(g1, b1, bn1.running_mean, bn1.running_var), w2_,
                             BatchNormArgs(g2, b2, bn2.running_mean, bn2.running_var), training)

    assert torch.autograd.gradgradcheck(f, (x, w1, bn1.weight, bn1.bias, w2, bn2.weight, bn2.bias))


def test_gradient_penalty_matches_the_reference():
    """A gradient penalty (the gradient's norm, differentiated again) through the fused blocks."""
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    bn = BatchNormArgs(torch.rand(4) + 0.5, torch.zeros(4))
    results = []
    for name in ("fast", "reference"):
        with attngan_fast.backend(name):
            out = ops.up_block(x, w, bn, True, True)
            (gx,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
            results.append(torch.autograd.grad(gx.square().sum(), w)[0])
    torch.testing.assert_close(results[0], results[1], rtol=1e-4, atol=1e-4)
    assert results[0].abs().max() > 0


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_masked_words_are_never_read(backend):
    h = torch.randn(2, 4, 3, 3)
    words = torch.randn(2, 4, 5)
    mask = torch.tensor([[False, False, False, True, True], [True, True, True, True, True]])
    poisoned = words.clone()
    poisoned[mask.unsqueeze(1).expand_as(words)] = float("nan")
    with attngan_fast.backend(backend):
        clean = ops.word_region_attention(h, words, mask, need_weights=True)
        dirty = ops.word_region_attention(h, poisoned, mask, need_weights=True)
    for a, b in zip(clean, dirty):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_batch_norm_parameters_of_another_dtype_are_refused_by_both_paths(backend):
    x = torch.randn(2, 3, 4, 4, dtype=D)
    w = torch.randn(4, 3, 3, 3, dtype=D)
    bn = BatchNormArgs(torch.ones(4), torch.zeros(4))  # float32 parameters, float64 activations
    with attngan_fast.backend(backend), pytest.raises(TypeError, match=r"bn.weight: expected dtype torch.float64"):
        ops.up_block(x, w, bn, True, True)
    # float32 parameters with bfloat16 activations are what autocast makes: accepted by both
    with attngan_fast.backend(backend):
        out = ops.up_block(x.bfloat16(), w.bfloat16(), bn, True, True)
    assert out.dtype == torch.bfloat16
