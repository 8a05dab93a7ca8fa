"""Word-region attention: the reference (per-sample mask, plain PyTorch) vs the fused op.

The refinement stages' shapes: stage 2 h (B, C, 64, 64), stage 3 h (B, C, 128, 128), words
(B, C, T). Sizes (see conftest): "cpu" birds (bird_attn2: B 20, C = GF_DIM 32, T = WORDS_NUM 18);
"full" birds and COCO (coco_attn2: B 14, C 48, T 12). Caption lengths: "mixed" cycles T down to
T/2 (birds 18..9, mean 13.5; masked words cost the fused op nothing), "full" has all T words.
Implementations: "fast" (no weights output: the op at its minimum) and "fast+weights" (the weights
written too, as GlobalAttentionGeneral asks for them). Recorded bytes are the minimum traffic:
forward reads h and words and writes the context (and the weights, for fast+weights); the backward
reads h, words and grad context and writes grad h and grad words.
"""
from __future__ import annotations

import pytest
import torch

from attngan_fast import config
from attngan_fast.ops import word_region_attention
from attngan_fast.reference import word_region_attention as word_region_attention_reference
from benchmarks.common import DEVICE, FULL, record

DATASETS = {"birds": "bird_attn2", **({"coco": "coco_attn2"} if FULL else {})}
STAGES = {"stage2": 64, "stage3": 128}
LENGTHS = ("mixed", "full")


def sizes(dataset: str) -> tuple[int, int, int]:
    """B, C, T of the data set's GAN training."""
    cfg = config.load(DATASETS[dataset])
    return cfg.TRAIN.BATCH_SIZE, cfg.GAN.GF_DIM, cfg.TEXT.WORDS_NUM


def caption_lengths(kind: str, B: int, T: int) -> list[int]:
    return [T - b % (T // 2 + 1) for b in range(B)] if kind == "mixed" else [T] * B


def attention_fn(impl: str):
    if impl == "reference":
        return lambda h, w, m: word_region_attention_reference(h, w, m)
    need_weights = impl == "fast+weights"
    return lambda h, w, m: word_region_attention(h, w, m, need_weights=need_weights)


@pytest.mark.parametrize("lengths", LENGTHS)
@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("dataset", list(DATASETS))
@pytest.mark.parametrize("passes", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", ["reference", "fast", "fast+weights"])
def test_word_region_attention(benchmark, impl, passes, dataset, stage, lengths):
    device = DEVICE
    B, C, T = sizes(dataset)
    S = STAGES[stage]
    lens = caption_lengths(lengths, B, T)
    h = torch.randn(B, C, S, S, device=device)
    words = torch.randn(B, C, T, device=device)
    mask = torch.arange(T, device=device).unsqueeze(0) >= torch.tensor(lens, device=device).unsqueeze(1)
    grad = torch.randn_like(h)
    attend = attention_fn(impl)
    Q, size = S * S, h.element_size()
    valid = sum(lens)  # words that take part, over the batch
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
    record(benchmark, group=f"attention {dataset}-{stage} T={T} B={B} {lengths} {passes} {device}", impl=impl, device=device,
           shapes={"h": list(h.shape), "words": list(words.shape), "lengths": lengths}, flops=flops, bytes_moved=moved)
    benchmark.pedantic(run, rounds=8 if S == 128 else 15, warmup_rounds=1, iterations=1)
