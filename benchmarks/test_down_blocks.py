"""The discriminator blocks, reference modules vs fused ops, at the GAN training shapes.

Cases: every distinct block of D_NET64 / D_NET128 / D_NET256 at bird_attn2's shapes (DF_DIM 64,
batch 20) and D_NET64 at demo_birds' widths (DF_DIM 8, batch 8): "first" (encode_image_by_16times'
conv 4x4 s2 + LeakyReLU), "down" (downBlock), "block3x3" (Block3x3_leakRelu), and "cond_head"
(COND_DNET: jointConv on cat(h, tiled sentence code) + outlogits; fast: the tiled code's share
as a per-position term). Groups: ``down_blocks/<data set>/<case>/<pass>/<layout>``; pass is "fwd"
(eval, no grad) or "fwd+bwd" (train mode, backward of a fixed random gradient into the input and
every parameter). "fast" is what the fast backend runs: the fused op where its kernel takes the shape
(CPU: output maps of <= 16 pixels), else the reference's math. Rounds: ``--benchmark-min-rounds``
(default 3).

    pytest benchmarks/test_down_blocks.py --benchmark-only --benchmark-min-rounds 5
"""
from __future__ import annotations

import warnings

import pytest
import torch

import attngan_fast
from attngan_fast import config
from attngan_fast.models import D_GET_LOGITS, Block3x3_leakRelu, DownBlock, downBlock
from benchmarks.common import DEVICE, IMPLS, record

DATASETS = {"birds": "bird_attn2", "demo": "demo_birds"}


def dataset_cases(dataset: str) -> dict[str, tuple[str, int, int, int, int, int]]:
    """name -> (kind, in channels, out channels, input H = W, batch, sentence dim) for the Ds of
    the configuration's stages (distinct shapes only)."""
    cfg = config.load(DATASETS[dataset])
    ndf, batch, nef = cfg.GAN.DF_DIM, cfg.TRAIN.BATCH_SIZE, cfg.TEXT.EMBEDDING_DIM
    cases: dict[str, tuple[str, int, int, int, int, int]] = {}

    def add(kind: str, ci: int, co: int, size: int) -> None:
        cases[f"{dataset}/{kind}_{ci}to{co}x{size}"] = (kind, ci, co, size, batch, nef)

    for stage in range(cfg.TREE.BRANCH_NUM):
        size = cfg.TREE.BASE_SIZE << stage
        add("first", 3, ndf, size)
        for k in range(3):
            add("down", ndf << k, ndf << (k + 1), size >> (k + 1))
        for k in range(stage):  # D128: s32; D256: s32, s64
            add("down", 8 * ndf << k, 16 * ndf << k, 8 << (stage - 1 - k))
        for k in range(stage, 0, -1):  # D128: s32_1; D256: s64_1, s64_2
            add("block3x3", 8 * ndf << k, 8 * ndf << (k - 1), 4)
    add("cond_head", 8 * ndf, 8 * ndf, 4)
    return cases


CASES = {name: case for dataset in DATASETS for name, case in dataset_cases(dataset).items()}


def conv_macs(kind: str, ci: int, co: int, size: int, batch: int, nef: int, fast: bool) -> int:
    """Multiply-adds of the block's convolutions, forward, per batch."""
    if kind == "cond_head":  # jointConv over ci + nef channels (fast: ci, plus the code's share)
        code = (co * nef * 16 + batch * nef * co * 16) if fast else batch * 16 * 9 * nef * co
        return batch * 16 * 9 * ci * co + code + batch * 16 * co
    if kind == "block3x3":
        return batch * size * size * 9 * ci * co
    return batch * (size // 2) ** 2 * 16 * ci * co


def make(kind: str, ci: int, co: int, size: int, batch: int, nef: int, channels_last: bool, device: str):
    if kind == "cond_head":
        module = D_GET_LOGITS(ci // 8, nef, bcondition=True)
    elif kind == "first":
        module = DownBlock.from_modules(*list(downBlock(ci, co).children())[::2])  # conv, LeakyReLU
    else:
        module = downBlock(ci, co) if kind == "down" else Block3x3_leakRelu(ci, co)
    module = module.to(device)
    x = torch.randn(batch, ci, size, size, device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    code = torch.randn(batch, nef, device=device)
    return module, x, code


# impl outermost in the decorators = varying fastest: each pair runs back to back (a shared machine's
# load drifts over a run)
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("passes,layout", [("fwd", "nchw"), ("fwd+bwd", "nchw"), ("fwd+bwd", "channels_last")])
@pytest.mark.parametrize("case", list(CASES))
def test_down_blocks(benchmark, request, impl, case, passes, layout):
    device = DEVICE
    kind, ci, co, size, batch, nef = CASES[case]
    module, x, code = make(kind, ci, co, size, batch, nef, layout == "channels_last", device)
    backward = passes == "fwd+bwd"
    macs_ref = conv_macs(kind, ci, co, size, batch, nef, fast=False) * (3 if backward else 1)
    macs_fast = conv_macs(kind, ci, co, size, batch, nef, fast=True) * (3 if backward else 1)
    record(benchmark, group=f"down_blocks/{case}/{passes}/{layout}", impl=impl, device=device,
           shapes={"x": list(x.shape), "module": f"{type(module).__name__}({ci}, {co})"},
           flops=2 * (macs_fast if impl == "fast" else macs_ref))
    benchmark.extra_info.update(macs_reference=macs_ref, macs_fast=macs_fast)
    call = (lambda: module(x, code)) if kind == "cond_head" else (lambda: module(x))
    if backward:
        x.requires_grad_()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the dispatch's one-time note on shapes the kernel leaves to the reference
            grad = torch.randn_like(call())

        def step():
            with attngan_fast.backend(impl):
                out = call()
            out.backward(grad)
    else:
        module.eval()

        def step():
            with torch.no_grad(), attngan_fast.backend(impl):
                return call()

    rounds = max(3, request.config.getoption("benchmark_min_rounds", 3) or 3)
    benchmark.pedantic(step, rounds=rounds, warmup_rounds=1, iterations=1)
