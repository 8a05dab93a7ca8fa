"""benchmarks/report.py: the README table from pytest-benchmark JSON (four implementations, limits, merging)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location("bench_report", Path(__file__).parents[1] / "benchmarks" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)


def bench(group: str, impl: str, median: float, **info) -> dict:
    return {"group": group, "stats": {"median": median},
            "extra_info": {"impl": impl, "device": "cpu x2", "torch": "2.x", "triton": "3.x", **info}}


def test_table_ratios_throughput_and_merge(tmp_path):
    step = "gan training step birds"
    first = {"datetime": "2026-11-29T08:00:00", "machine_info": {"cpu": {"brand_raw": "Some CPU"}, "python_version": "3.11"},
             "benchmarks": [bench("limit: copy", "limit", 0.5, bytes=4e9, limit_of="bytes"),
                            bench(step, "reference", 3.0, shapes={"batch": 16, "h": [2, 3]}),
                            bench(step, "fast", 1.5, flops=3e9),
                            bench(step, "fast+compile", 1.0, flops=3e9),
                            bench(step, "reference+compile", 2.0)]}
    second = {"benchmarks": [bench("attention", "reference", 0.004, bytes=2e6),
                             bench("attention", "fast", 0.001, bytes=2e6),
                             bench("attention", "fast+weights", 0.002, bytes=3e6)]}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path, doc in zip(paths, (first, second)):
        path.write_text(json.dumps(doc))
    out = tmp_path / "table.md"
    report.main([str(p) for p in paths] + ["--out", str(out)])
    text = out.read_text()
    assert "Some CPU" in text and "copy 8 GB/s" in text
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert set(rows) == {"benchmark", step, "attention"}  # the limit is no row
    cells = rows[step].split(" | ")
    assert cells[1:10] == ["batch 16, h 2x3", "cpu x2", "3 s", "1.5 s", "**2.00x**", "1 s", "**3.00x**", "2 s", "**2.00x**"]
    assert cells[11].rstrip(" |") == "fast+compile: 0.003 TFLOP/s"  # no flops limit measured
    cells = rows["attention"].split(" | ")
    assert cells[5] == "**4.00x**" and cells[10] == "fast+weights 2 ms (2.00x)"
    assert cells[11].rstrip(" |") == "2 GB/s (25%)"
