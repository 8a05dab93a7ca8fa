"""Sampling: one batch of 256 px images from captions, G_NET in eval mode under no_grad.

A generator of the birds (or COCO) shape with random weights (``weights_init``): 3 stages
(64/128/256 px), attention at stages 2 and 3, caption lengths cycling from WORDS_NUM down to
half of it. Sizes (see conftest): "cpu" the bird_attn2 generator (GF_DIM 32, R_NUM 2, T 18)
at batch 8; "full" bird_attn2 and coco_attn2 (GF_DIM 48, R_NUM 3, T 12) at batch 32.
Implementations: reference, reference+compile, fast, fast+compile (``torch.compile(G,
fullgraph=True)``, inductor; compiled before the timed rounds). ``flops``: the reference's multiply-adds x 2 (convolutions,
linear layers and matmuls, counted by ``torch.utils.flop_counter``), so every implementation's
TFLOP/s is on the same algorithmic count.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import attngan_fast
from attngan_fast import config
from attngan_fast.models import G_NET, weights_init
from benchmarks.common import DEVICE, FULL, record

CASES = {"birds": ("bird_attn2", 32), "coco": ("coco_attn2", 32)} if FULL else {"birds": ("bird_attn2", 8)}
IMPLS = ("reference", "reference+compile", "fast", "fast+compile")


def make_inputs(cfg: config.Config, batch: int) -> tuple[torch.Tensor, ...]:
    """z (B, Z), sent (B, E), words (B, E, T), mask (B, T), eps (B, C) on DEVICE; lengths T .. T/2."""
    T = cfg.TEXT.WORDS_NUM
    lens = torch.tensor([T - b % (T // 2 + 1) for b in range(batch)])
    mask = torch.arange(T).unsqueeze(0) >= lens.unsqueeze(1)
    words = torch.randn(batch, cfg.TEXT.EMBEDDING_DIM, T).masked_fill(mask.unsqueeze(1), 0.0)
    inputs = (torch.randn(batch, cfg.GAN.Z_DIM), torch.randn(batch, cfg.TEXT.EMBEDDING_DIM), words, mask,
              torch.randn(batch, cfg.GAN.CONDITION_DIM))
    return tuple(t.to(DEVICE) for t in inputs)


def reference_flops(G: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> int:
    with attngan_fast.backend("reference"), FlopCounterMode(display=False) as counter:
        G(*inputs)
    return counter.get_total_flops()


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dataset", list(CASES))
def test_generate(benchmark, dataset, impl):
    name, batch = CASES[dataset]
    cfg = config.load(name)
    torch.manual_seed(0)
    G = G_NET(cfg)
    G.apply(weights_init)
    G = G.to(DEVICE).eval().requires_grad_(False)
    inputs = make_inputs(cfg, batch)
    size = cfg.TREE.BASE_SIZE * 2 ** (cfg.TREE.BRANCH_NUM - 1)
    with torch.no_grad():
        flops = reference_flops(G, inputs)
    record(benchmark, group=f"generate {dataset} {size}px B={batch}", impl=impl, device=DEVICE, flops=flops,
           shapes={"batch": batch, "image": size, "stages": cfg.TREE.BRANCH_NUM, "gf_dim": cfg.GAN.GF_DIM,
                   "r_num": cfg.GAN.R_NUM, "T": cfg.TEXT.WORDS_NUM})
    model = torch.compile(G, fullgraph=True) if impl.endswith("+compile") else G

    def sample():
        with torch.no_grad(), attngan_fast.backend("reference" if impl.startswith("reference") else "fast"):
            return model(*inputs)[0][-1]

    assert torch.isfinite(sample()).all()  # also the compilation, outside the timed rounds
    benchmark.pedantic(sample, rounds=3, warmup_rounds=1, iterations=1)
