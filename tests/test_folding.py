"""The frozen image encoder with BatchNorm folded into its convolutions vs the unfolded module."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import attngan_fast
from attngan_fast.models import CNN_ENCODER
from attngan_fast.models.folding import FrozenImageEncoder, fold_batchnorm
from attngan_fast.models.small_cnn import SmallImageEncoder


def randomize_bn(module: nn.Module) -> nn.Module:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            with torch.no_grad():
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return module.eval().requires_grad_(False)


def forward_and_input_grad(encoder: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_(True)
    regions, code = encoder(x)
    (regions.square().sum() + code.sum()).backward()
    return regions.detach(), code.detach(), x.grad


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rel: float) -> None:
    scale = expected.abs().max().item()
    assert (actual - expected).abs().max().item() <= rel * scale, (actual - expected).abs().max().item() / scale


@pytest.mark.parametrize("dtype,rel", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_small_cnn_folded_equals_unfolded(dtype, rel, memory_format):
    encoder = randomize_bn(SmallImageEncoder(16, width=8, input_size=32)).to(dtype)
    x = torch.randn(3, 3, 32, 32, dtype=dtype).contiguous(memory_format=memory_format)
    folded = fold_batchnorm(encoder)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    for a, b in zip(forward_and_input_grad(folded, x), forward_and_input_grad(encoder, x)):
        assert_rel_close(a, b, rel)


def test_inception_encoder_folded_equals_unfolded():
    """Every BasicConv2d of the Inception trunk is folded; one mixed block checked in float64 (the whole
    trunk at 299 px in float64 is too slow for the suite)."""
    with pytest.warns(UserWarning, match="randomly initialised"):
        encoder = CNN_ENCODER(8)
    encoder = randomize_bn(encoder).double()
    folded = fold_batchnorm(encoder)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in encoder.modules()) == 94
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 192, 9, 11, dtype=torch.float64, requires_grad=True)
    for block, folded_block in ((encoder.Mixed_5b, folded.Mixed_5b),):
        expected = block(x)
        (gx,) = torch.autograd.grad(expected.square().sum(), x)
        actual = folded_block(x)
        (gx_folded,) = torch.autograd.grad(actual.square().sum(), x)
        assert_rel_close(actual, expected, 1e-10)
        assert_rel_close(gx_folded, gx, 1e-10)


def test_frozen_encoder_follows_the_backend_and_stays_in_eval():
    encoder = randomize_bn(SmallImageEncoder(16, width=8, input_size=32))
    frozen = FrozenImageEncoder(encoder).train()
    assert not frozen.training and not frozen.encoder.training
    x = torch.randn(2, 3, 32, 32)
    with attngan_fast.backend("reference"):
        ref = frozen(x)
    exact = encoder(x)
    assert all(torch.equal(a, b) for a, b in zip(ref, exact))  # the reference path is the module itself
    with attngan_fast.backend("fast"):
        fast = frozen(x)
    for a, b in zip(fast, exact):
        assert_rel_close(a, b, 1e-4)


@pytest.mark.parametrize("backend", ["fast", "reference"])
def test_frozen_encoder_in_bf16_has_float32_outputs_within_bf16_error(backend):
    """dtype=bf16: the folded copy cast once (fast; channels_last on a CPU) or autocast (reference);
    outputs and the input's gradient float32 and contiguous, as far from float32 as plain PyTorch's
    bf16 module is (the input gradient through six convolutions: ~17% of its largest value)."""
    encoder = randomize_bn(SmallImageEncoder(16, width=8, input_size=32))
    frozen = FrozenImageEncoder(encoder, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in frozen.folded.parameters())
    assert all(p.dtype == torch.float32 for p in frozen.encoder.parameters())
    x = torch.randn(3, 3, 32, 32)
    with attngan_fast.backend(backend):
        low = forward_and_input_grad(frozen, x)
    exact = forward_and_input_grad(encoder, x)
    plain = forward_and_input_grad(copy.deepcopy(encoder).to(torch.bfloat16), x.to(torch.bfloat16))
    for a, b, p in zip(low, exact, plain):
        assert a.dtype == torch.float32 and a.is_contiguous()
        plain_error = (p.float() - b).abs().max().item()
        assert (a - b).abs().max().item() <= 2 * plain_error + 1e-3 * b.abs().max().item()


def test_fast_frozen_encoder_returns_contiguous_outputs_in_the_input_dtype():
    encoder = randomize_bn(SmallImageEncoder(16, width=8, input_size=32)).double()
    with attngan_fast.backend("fast"):
        regions, code = FrozenImageEncoder(encoder)(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    assert regions.dtype == code.dtype == torch.float64 and regions.is_contiguous()


def test_fold_needs_running_stats():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(ValueError, match="running statistics"):
        fold_batchnorm(seq)
