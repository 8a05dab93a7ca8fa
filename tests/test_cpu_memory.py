"""retain_freed_memory: glibc's thresholds set once per process; elsewhere nothing changes."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from attngan_fast import cpu_memory, retain_freed_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_sets_glibc_thresholds_once():
    code = "from attngan_fast import retain_freed_memory as r; print(r(), r())"  # a fresh process
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["True", "True"]


def test_not_glibc_changes_nothing(monkeypatch):
    monkeypatch.setattr(cpu_memory, "_done", None)
    monkeypatch.setattr(platform, "libc_ver", lambda: ("", ""))
    assert retain_freed_memory() is False
    monkeypatch.setattr(platform, "libc_ver", lambda: ("glibc", "2.36"))
    assert retain_freed_memory() is False  # decided once per process


def test_exported():
    import attngan_fast

    assert "retain_freed_memory" in attngan_fast.__all__
