"""What the benchmark files share: sizes, the device, ``record`` (the pair a benchmark belongs to and its
environment) and the CUDA-event timer. The pytest hooks that use them are in ``conftest.py``."""
from __future__ import annotations

import os
import platform
from typing import Any

import pytest
import torch

IMPLS = ("reference", "fast")  # a third, e.g. "fast+compile", is reported against "reference" too
SIZES = os.environ.get("ATTNGAN_BENCH_SIZES", "cpu")
if SIZES not in ("cpu", "full"):
    raise pytest.UsageError(f"ATTNGAN_BENCH_SIZES: expected 'cpu' or 'full', got {SIZES!r}")
FULL = SIZES == "full"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"


def record(benchmark, *, group: str, impl: str, device: torch.device | str = "cpu", shapes: dict[str, Any] | None = None,
           flops: float | None = None, bytes_moved: float | None = None) -> None:
    """Name the pair this benchmark belongs to and record the environment in ``extra_info``."""
    import attngan_fast

    benchmark.group = group
    info = benchmark.extra_info
    info.update(impl=impl, device=device_name(device), torch=torch.__version__,
                triton=attngan_fast.extension_info()["triton"], shapes=shapes or {})
    if flops is not None:
        info["flops"] = flops
    if bytes_moved is not None:
        info["bytes"] = bytes_moved


_base_event = None


def cuda_event_timer() -> float:
    """pytest-benchmark's timer on CUDA: seconds on the GPU's clock. Each call records an event on
    the current stream and waits for it, so a round measures the device time between the events
    around the call (no host timing of launches and synchronisation)."""
    global _base_event
    event = torch.cuda.Event(enable_timing=True)
    event.record()
    event.synchronize()
    if _base_event is None:
        _base_event = event
    return _base_event.elapsed_time(event) / 1e3
