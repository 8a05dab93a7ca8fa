"""Word-region attention: the reference (per-sample mask, plain PyTorch) vs the fused op.

Birds refinement stages, T = WORDS_NUM = 18, batch = the birds training batch (20):
stage 2 h (20, 32, 64, 64), stage 3 h (20, 32, 128, 128). Caption lengths: "mixed" cycles 18..9
(mean 13.5; masked words cost the fused op nothing), "full" has all 18 words. Implementations:
"fast" (no weights output: the op at its minimum) and "fast+weights" (the weights written too, as
GlobalAttentionGeneral asks for them). Recorded bytes are the minimum traffic: forward reads h and
words and writes the context (and the weights, for fast+weights); the backward reads h, words and
grad context and writes grad h and grad words.
"""
from __future__ import annotations

import pytest
import torch

from attngan_fast.models.attention import word_region_attention_reference
from attngan_fast.ops import word_region_attention
from conftest import record, synchronized

B, C, T = 20, 32, 18
STAGES = {"birds-stage2": 64, "birds-stage3": 128}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
LENGTHS = {"mixed": [18 - b % 10 for b in range(B)], "full": [T] * B}


def attention_fn(impl: str):
    if impl == "reference":
        return lambda h, w, m: word_region_attention_reference(h, w, m)
    need_weights = impl == "fast+weights"
    return lambda h, w, m: word_region_attention(h, w, m, need_weights=need_weights)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lengths", list(LENGTHS))
@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("passes", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["reference", "fast", "fast+weights"])
def test_word_region_attention(benchmark, impl, passes, stage, lengths, device):
    S = STAGES[stage]
    h = torch.randn(B, C, S, S, device=device)
    words = torch.randn(B, C, T, device=device)
    mask = torch.arange(T, device=device).unsqueeze(0) >= torch.tensor(LENGTHS[lengths], device=device).unsqueeze(1)
    grad = torch.randn_like(h)
    attend = attention_fn(impl)
    Q, size = S * S, h.element_size()
    valid = sum(LENGTHS[lengths])  # words that take part, over the batch
    flops = 4 * Q * C * valid  # scores + context
    moved = (2 * B * C * Q + B * C * T) * size + (B * T * Q * size if impl == "fast+weights" else 0)
    if passes == "fwd":
        def run():
            with torch.no_grad():
                return attend(h, words, mask)
    else:
        h.requires_grad_()
        words.requires_grad_()
        flops += 10 * Q * C * valid  # recomputed scores, grad of weights, grad h, grad words
        moved += (3 * B * C * Q + 2 * B * C * T) * size

        def run():
            context, _ = attend(h, words, mask)
            return torch.autograd.grad(context, (h, words), grad)
    record(benchmark, group=f"attention {stage} T={T} B={B} {lengths} {passes} {device}", impl=impl, device=device,
           shapes={"h": list(h.shape), "words": list(words.shape), "lengths": lengths}, flops=flops, bytes_moved=moved)
    benchmark.pedantic(synchronized(run, device), rounds=8 if S == 128 else 15, warmup_rounds=1, iterations=1)
