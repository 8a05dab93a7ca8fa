"""The generator blocks, reference modules vs fused ops, at the GAN training shapes.

Sizes (see conftest): "cpu" birds (bird_attn2: GF_DIM 32, batch 20) and the demo's (demo_birds:
GF_DIM 8, batch 16: 8-64 channels per pixel; the CPU epilogues unroll their loops at 8, 16 and 32);
"full" birds and COCO (coco_attn2: GF_DIM 48, batch 14). Groups: ``blocks/<data set>/<block>/<pass>/<layout>``; pass
is "fwd" (eval mode, no grad: sampling) or "fwd+bwd" (train mode, backward of a fixed random
gradient into the input and every parameter). extra_info records the multiply-adds of the reference and of the fast
path's convolutions (``macs_reference``,
``macs_fast``): the phase decomposition runs 16 instead of 36 per input pixel and channel pair
(x (H+1)(W+1)/HW on maps over 64 pixels, where one 2x2 conv computes all four phases).

    pytest benchmarks/test_blocks.py --benchmark-only
"""
from __future__ import annotations

import pytest
import torch

import attngan_fast
from attngan_fast import config
from attngan_fast.models import ResBlock, upBlock
from benchmarks.common import DEVICE, FULL, IMPLS, record

DATASETS = {"birds": "bird_attn2", "demo": "demo_birds", **({"coco": "coco_attn2"} if FULL else {})}


def dataset_cases(dataset: str) -> dict[str, tuple[str, int, int, int, int]]:
    """name -> (kind, in channels, out channels, H = W, batch): INIT_STAGE_G's upsample1..4, the
    stage-2/3 ResBlocks (2 GF_DIM channels at 64^2 and 128^2) and NEXT_STAGE_G's upBlock at
    128^2 -> 256^2 (birds: 512x4 -> 256, ..., res 64 channels)."""
    cfg = config.load(DATASETS[dataset])
    ngf, batch = cfg.GAN.GF_DIM, cfg.TRAIN.BATCH_SIZE
    cases = {f"init_up{k + 1}_{16 * ngf >> k}x{4 << k}": ("up", 16 * ngf >> k, 8 * ngf >> k, 4 << k, batch)
             for k in range(4)}
    cases[f"next_up_{2 * ngf}x128"] = ("up", 2 * ngf, ngf, 128, batch)
    cases.update({f"res_{2 * ngf}x{size}": ("res", 2 * ngf, 2 * ngf, size, batch) for size in (64, 128)})
    return {f"{dataset}/{name}": case for name, case in cases.items()}


CASES = {name: case for dataset in DATASETS for name, case in dataset_cases(dataset).items()}


def conv_macs(kind: str, ci: int, co: int, size: int, batch: int, fast: bool) -> int:
    """Multiply-adds of the block's convolutions, forward, per batch."""
    if kind == "res":
        return batch * size * size * 9 * (ci * 2 * ci + ci * ci)
    if fast and size * size <= 64:  # per-phase GEMMs: exactly 16 per input pixel
        return batch * size * size * 16 * ci * 2 * co
    if fast:  # one 2x2 conv with 4 * 2co outputs over (H+1) x (W+1)
        return batch * (size + 1) ** 2 * 4 * ci * 4 * 2 * co
    return batch * (2 * size) ** 2 * 9 * ci * 2 * co


def make(kind: str, ci: int, co: int, size: int, batch: int, channels_last: bool, device: str):
    module = (upBlock(ci, co) if kind == "up" else ResBlock(ci)).to(device)
    x = torch.randn(batch, ci, size, size, device=device)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    return module, x


@pytest.mark.parametrize("passes,layout", [("fwd", "nchw"), ("fwd+bwd", "nchw"), ("fwd+bwd", "channels_last")])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("impl", IMPLS)
def test_blocks(benchmark, impl, case, passes, layout):
    device = DEVICE
    kind, ci, co, size, batch = CASES[case]
    module, x = make(kind, ci, co, size, batch, layout == "channels_last", device)
    backward = passes == "fwd+bwd"
    macs_ref = conv_macs(kind, ci, co, size, batch, fast=False) * (3 if backward else 1)
    macs_fast = conv_macs(kind, ci, co, size, batch, fast=True) * (3 if backward else 1)
    record(benchmark, group=f"blocks/{case}/{passes}/{layout}", impl=impl, device=device,
           shapes={"x": list(x.shape), "module": f"{type(module).__name__}({ci}, {co})"},
           flops=2 * (macs_fast if impl == "fast" else macs_ref))
    benchmark.extra_info.update(macs_reference=macs_ref, macs_fast=macs_fast)
    if backward:
        x.requires_grad_()
        with torch.no_grad():
            grad = torch.randn_like(module(x))

        def step():
            with attngan_fast.backend(impl):
                out = module(x)
            out.backward(grad)
    else:
        module.eval()

        def step():
            with torch.no_grad(), attngan_fast.backend(impl):
                return module(x)

    benchmark.pedantic(step, rounds=3, warmup_rounds=1, iterations=1)
