"""The machine's measured limits, the denominators of ``report.py``'s percentages.

copy: ``dst.copy_(src)`` of a large float32 buffer (256 MiB on CUDA, 64 MiB on the CPU), counting
the bytes read and written; matmul: a float32 (N x N) @ (N x N) product with the default precision
settings (N 8192 on CUDA, 1024 on the CPU), counting 2 N^3 flops. Recorded with impl "limit".
"""
from __future__ import annotations

import torch

from benchmarks.common import DEVICE, record

COPY_ELEMENTS = (64 if DEVICE == "cuda" else 16) * 2**20
MATMUL_N = 8192 if DEVICE == "cuda" else 1024


def test_copy_bandwidth(benchmark):
    src = torch.randn(COPY_ELEMENTS, device=DEVICE)
    dst = torch.empty_like(src)
    record(benchmark, group="limit: copy", impl="limit", device=DEVICE, shapes={"elements": COPY_ELEMENTS},
           bytes_moved=2 * src.numel() * src.element_size())
    benchmark.extra_info["limit_of"] = "bytes"
    benchmark.pedantic(lambda: dst.copy_(src), rounds=10, warmup_rounds=2, iterations=1)


def test_matmul_fp32(benchmark):
    a, b = torch.randn(MATMUL_N, MATMUL_N, device=DEVICE), torch.randn(MATMUL_N, MATMUL_N, device=DEVICE)
    record(benchmark, group="limit: matmul fp32", impl="limit", device=DEVICE, shapes={"n": MATMUL_N},
           flops=2 * MATMUL_N**3)
    benchmark.extra_info["limit_of"] = "flops"
    benchmark.pedantic(lambda: a @ b, rounds=10, warmup_rounds=2, iterations=1)
