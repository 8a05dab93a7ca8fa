"""Every Triton kernel x config x dtype compiled ahead of time for sm_80 and sm_90 (no GPU needed).

Runs tools/triton_resources.py (every kernel x config x dtype x bucket, see ``cases``) in a
subprocess without ``TRITON_INTERPRET`` (the interpreter's kernels cannot be compiled) and fails on
a compile error, on shared memory over the target's per-block limit, on more registers than a thread
can have, or on spills above the bounds documented in that script. Slow (minutes: ptxas, on every
core), marked ``slow``; runs in CI.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_triton_kernel_config_compiles_within_the_targets_resources(tmp_path):
    pytest.importorskip("triton.backends.nvidia.compiler")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    out_json = tmp_path / "resources.json"
    jobs = str(min(4, os.cpu_count() or 1))
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "triton_resources.py"), "--jobs", jobs,
                           "--json", str(out_json)], env=env, capture_output=True, text=True, cwd=ROOT)
    assert out_json.exists(), proc.stderr[-4000:]
    report = json.loads(out_json.read_text())
    assert report["rows"], "no compile cases"
    assert not report["problems"], "\n".join(report["problems"])[:8000]
    assert proc.returncode == 0, proc.stderr[-4000:]
