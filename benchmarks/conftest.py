"""Shared benchmark setup: pairing reference and fast in one run and reporting the ratio.

Each benchmark test is parametrized over ``impl`` in ("reference", "fast") and calls
``record(benchmark, group=..., impl=..., shapes=...)`` before timing. At the end of the run the
ratio reference/fast of every group is printed; ``benchmarks/report.py`` turns the JSON
(``--benchmark-json``) into the README table.

Sizes: ``ATTNGAN_BENCH_SIZES`` selects the shapes of every file. "cpu" (the default) keeps the
suite within minutes on a 2-core CPU (the birds shapes for the components, small batches and
widths end to end); "full" runs the birds and COCO training shapes (bird_attn2 and coco_attn2:
batch 20 and 14) everywhere, for a GPU. Benchmarks run on CUDA when it is available, else on the CPU.
On CUDA the rounds are timed with CUDA events (``cuda_event_timer``), on the CPU with perf_counter.
"""
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


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """On CUDA, time with CUDA events (cuda_event_timer) unless --benchmark-timer says otherwise."""
    from pytest_benchmark.timers import default_timer
    from pytest_benchmark.utils import NameWrapper

    if DEVICE == "cuda" and getattr(config.option, "benchmark_timer", None) == str(NameWrapper(default_timer)):
        config.option.benchmark_timer = f"{__name__}.cuda_event_timer"  # pytest-benchmark imports it by name


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, dict[str, float]] = {}
    peaks: dict[str, dict[str, int]] = {}
    for bench in session.benchmarks:
        impl = bench.extra_info.get("impl")
        if impl and bench.stats is not None:
            groups.setdefault(bench.group, {})[impl] = bench.stats.median
            if "peak_bytes" in bench.extra_info:  # optional: peak memory of one call
                peaks.setdefault(bench.group, {})[impl] = bench.extra_info["peak_bytes"]
    terminalreporter.section("reference / other (median time ratio)")
    for group, times in sorted(groups.items()):
        ref = times.get("reference")
        for impl, t in sorted(times.items()):
            if ref is not None and impl != "reference":
                peak = peaks.get(group, {})
                mem = (f", peak memory reference {peak['reference'] / 2**20:.1f} MiB, {impl} {peak[impl] / 2**20:.1f} MiB"
                       if "reference" in peak and impl in peak else "")
                terminalreporter.write_line(f"{group:60s} {impl:14s} {ref / t:6.2f}x "
                                            f"(reference {ref * 1e3:.2f} ms, {impl} {t * 1e3:.2f} ms{mem})")
