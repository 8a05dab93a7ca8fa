"""The fallback policy of the ops (attngan_fast.ops.dispatch): kernel limits, missing devices,
Triton registration failures, and the side-effect-free BatchNorm arguments."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn

from attngan_fast import reference
from attngan_fast.ops import (
    attention,
    batch_norm_args,
    count_batch,
    damsm,
    damsm_word_similarity,
    dispatch,
    upsample_conv3x3,
    word_region_attention,
)
from tests.kernel_checks import assert_close

G1, G2 = 4.0, 5.0


def _messages(caught) -> list[str]:
    return [str(w.message) for w in caught if "attngan_fast." in str(w.message)]


@pytest.fixture
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(dispatch, "_warned", set())


def _with_cuda_limits_on_cpu(monkeypatch, op: str, limits: list[dispatch.Limit]) -> None:
    """The dispatch table as on a GPU machine, with the CUDA kernel's limits given to the CPU kernel."""
    table = {name: dict(devices) for name, devices in dispatch._kernels.items()}
    table[op]["cpu"] = tuple(limits)
    monkeypatch.setattr(dispatch, "_kernels", table)


def test_too_long_caption_falls_back_to_the_reference_with_one_warning(monkeypatch, fresh_warnings):
    """DAMSM's Triton kernels take T <= 64 word slots: a longer caption runs the reference (it raised before)."""
    pytest.importorskip("triton")
    _with_cuda_limits_on_cpu(monkeypatch, "damsm_word_similarity", damsm.triton_limits())
    calls = []
    monkeypatch.setattr(torch.ops.attngan_fast, "damsm_word_similarity", lambda *a: calls.append(a))
    words, regions = torch.randn(2, 8, 70), torch.randn(2, 8, 3, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            sim, attn = damsm_word_similarity(words, [70, 5], regions, G1, G2, need_attention=True)
    assert not calls
    expected = reference.damsm_word_similarity(words, [70, 5], regions, G1, G2, True)
    assert torch.equal(sim, expected[0]) and torch.equal(attn, expected[1])
    assert _messages(caught) == ["attngan_fast.damsm_word_similarity: the cpu kernel takes at most 64 word slots "
                                 "(T <= 64); using the reference implementation"]
    # within the limit the kernel runs
    monkeypatch.undo()
    short = damsm_word_similarity(words[:, :, :10], [10, 5], regions, G1, G2)[0]
    assert_close(short, reference.damsm_word_similarity(words[:, :, :10], [10, 5], regions, G1, G2)[0])


def test_damsm_cuda_limits_name_width_and_float64(monkeypatch, fresh_warnings):
    pytest.importorskip("triton")
    _with_cuda_limits_on_cpu(monkeypatch, "damsm_word_similarity", damsm.triton_limits())
    regions = torch.randn(2, 300, 2, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        damsm_word_similarity(torch.randn(2, 300, 3), [3, 1], regions, G1, G2)
        damsm_word_similarity(torch.randn(2, 4, 3).double(), [3, 1], regions[:, :4].double(), G1, G2)
    assert [m.split("takes ")[1] for m in _messages(caught)] == [
        "at most 256 features (D <= 256); using the reference implementation",
        "float32, float16 or bfloat16 (float64 has no tl.dot path); using the reference implementation"]


def test_attention_cuda_limit_applies_to_long_captions(monkeypatch, fresh_warnings):
    pytest.importorskip("triton")
    _with_cuda_limits_on_cpu(monkeypatch, "word_region_attention", attention.triton_limits())
    h, words = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 65)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctx, weights = word_region_attention(h, words, need_weights=True)
        word_region_attention(h, words[:, :, :64])
    assert torch.equal(ctx, reference.word_region_attention(h, words)[0])
    assert _messages(caught) == ["attngan_fast.word_region_attention: the cpu kernel takes at most 64 words "
                                 "(T <= 64); using the reference implementation"]


def test_attention_limit_warns_once_per_limit(monkeypatch, fresh_warnings):
    limits = [dispatch.Limit("at most 4 words (T <= 4)", lambda h, words, mask: words.shape[2] <= 4),
              dispatch.Limit("no float64", lambda h, words, mask: h.dtype != torch.float64)]
    _with_cuda_limits_on_cpu(monkeypatch, "word_region_attention", limits)
    h, words = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            ctx, _ = word_region_attention(h, words)
            word_region_attention(h.double(), words[:, :, :3].double())
    assert torch.equal(ctx, reference.word_region_attention(h, words)[0])
    assert [m.split(": ")[1] for m in _messages(caught)] == [
        "the cpu kernel takes at most 4 words (T <= 4); using the reference implementation",
        "the cpu kernel takes no float64; using the reference implementation"]


def test_fallback_warns_once_for_a_device_without_kernel(monkeypatch, fresh_warnings):
    monkeypatch.setattr(dispatch, "_kernels", {"upsample_conv3x3": {"cuda": ()}})
    x, weight = torch.randn(1, 2, 3, 3), torch.randn(4, 2, 3, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            out = upsample_conv3x3(x, weight)
    assert torch.equal(out, reference.upsample_conv3x3(x, weight))
    assert _messages(caught) == ["attngan_fast.upsample_conv3x3: no cpu kernel; using the reference implementation"]


def test_registered_kernels_and_limits():
    for op in ("word_region_attention", "damsm_word_similarity", "upsample_conv3x3", "up_block", "res_block"):
        assert "cpu" in dispatch.kernel_devices(op)
        assert dispatch.kernel_limits(op, "cpu") == ()  # the C++ kernels take any size and floating dtype
    assert dispatch.kernel_devices("no_such_op") == frozenset()


def test_triton_registration_failure_is_a_warning(monkeypatch, fresh_warnings):
    monkeypatch.setattr(dispatch, "_kernels", {})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def broken() -> list[dispatch.Limit]:
        raise RuntimeError("PTX version mismatch")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dispatch.register_triton("some_op", broken)
    assert _messages(caught) == ["attngan_fast.some_op: the Triton kernels could not be registered (RuntimeError: "
                                 "PTX version mismatch); CUDA tensors use the reference implementation"]
    assert dispatch.kernel_devices("some_op") == frozenset()
    assert ("some_op", "cuda") in dispatch._warned  # no second warning at the first CUDA call
    dispatch.register_triton("other_op", lambda: [dispatch.Limit("x", lambda *a: True)])
    assert dispatch.kernel_devices("other_op") == {"cuda"} and dispatch.kernel_limits("other_op", "cuda")[0].what == "x"


def test_import_survives_broken_triton_kernels():
    """`import attngan_fast` with a (pretended) GPU whose Triton kernels fail to import: warnings, CPU ops work."""
    code = (
        "import sys, warnings, torch\n"
        "torch.cuda.is_available = lambda: True\n"
        "sys.modules['attngan_fast.kernels.attention'] = None\n"  # ModuleNotFoundError on import
        "sys.modules['attngan_fast.kernels.damsm'] = None\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    import attngan_fast\n"
        "msgs = [str(x.message) for x in w if 'Triton kernels could not be registered' in str(x.message)]\n"
        "assert len(msgs) == 2 and all('ModuleNotFoundError' in m for m in msgs), msgs\n"
        "from attngan_fast.ops import dispatch, word_region_attention\n"
        "assert dispatch.kernel_devices('word_region_attention') == {'cpu'}\n"
        "ctx, _ = word_region_attention(torch.randn(1, 2, 3, 3), torch.randn(1, 2, 4))\n"
        "assert ctx.shape == (1, 2, 3, 3)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("track", [True, False])
def test_batch_norm_args_has_no_side_effect(momentum, track):
    bn = nn.BatchNorm2d(4, momentum=momentum, track_running_stats=track)
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    first, second = batch_norm_args(bn), batch_norm_args(bn)
    assert all(torch.equal(v, bn.state_dict()[k]) for k, v in state.items())
    assert first.momentum == second.momentum == (0.1 if momentum == 0.1 else 1.0 if track else 0.0)
    count_batch(bn)
    if track:
        assert int(bn.num_batches_tracked) == 1
        assert batch_norm_args(bn).momentum == (0.1 if momentum == 0.1 else 0.5)  # the 2nd batch: 1/2
        bn.eval()
        count_batch(bn)  # eval batches are not counted
        assert int(bn.num_batches_tracked) == 1
    else:
        assert bn.num_batches_tracked is None


def test_invalid_input_counts_no_batch():
    """A block that rejects its input leaves num_batches_tracked alone (it used to count first)."""
    from attngan_fast.models import upBlock

    up = upBlock(4, 2)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        up(torch.zeros(0, 4, 2, 2))
    assert int(up[2].num_batches_tracked) == 0
    up(torch.randn(2, 4, 3, 3))
    assert int(up[2].num_batches_tracked) == 1


def test_a_quiet_limit_falls_back_without_a_warning(monkeypatch, fresh_warnings):
    """The D blocks' shape limits (chosen for speed) send the input to the reference silently."""
    from attngan_fast.ops import dispatch

    monkeypatch.setitem(dispatch._kernels, "probe_op", {"cpu": (dispatch.Limit("small", lambda x: x.numel() < 4, True),)})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dispatch.use_kernel("probe_op", torch.zeros(2))
        assert not dispatch.use_kernel("probe_op", torch.zeros(5))
    assert _messages(caught) == []
