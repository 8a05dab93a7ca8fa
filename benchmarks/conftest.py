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

import pytest

from .common import DEVICE


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """On CUDA, time with CUDA events (cuda_event_timer) unless --benchmark-timer says otherwise."""
    from pytest_benchmark.timers import default_timer
    from pytest_benchmark.utils import NameWrapper

    if DEVICE == "cuda" and getattr(config.option, "benchmark_timer", None) == str(NameWrapper(default_timer)):
        config.option.benchmark_timer = "benchmarks.common.cuda_event_timer"  # pytest-benchmark imports it by name


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
