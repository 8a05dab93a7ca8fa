"""The attngan-fast command line: subcommands registered by their modules."""
from __future__ import annotations

import subprocess
import sys

import pytest

from attngan_fast.cli import build_parser, main


def test_subcommands_listed():
    text = build_parser().format_help()
    assert "make-synthetic" in text and "pretrain-damsm" in text


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "attngan_fast.cli", "pretrain-damsm", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "--resume" in out and "--cfg" in out


def test_no_command_is_an_error(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_set_up_cpu_sets_threads_and_keeps_freed_memory(monkeypatch):
    """Every computing command's first step: the threads, then glibc's thresholds."""
    import torch

    from attngan_fast.cli import common

    calls = []
    monkeypatch.setattr(common, "retain_freed_memory", lambda: calls.append("retain") or True)
    before = torch.get_num_threads()
    try:
        assert common.set_up_cpu(1) == 1 and torch.get_num_threads() == 1
        assert calls == ["retain"]
    finally:
        torch.set_num_threads(before)


def test_set_threads(monkeypatch):
    import torch

    from attngan_fast.cli import common
    from attngan_fast.cli.common import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr(common, "busy_cores", lambda: 1000.0)
        assert set_threads(None) == 1  # a fully busy machine: one thread
        monkeypatch.setattr(common, "busy_cores", lambda: 0.0)
        torch.set_num_threads(before)
        assert set_threads(None) == min(before, __import__("os").cpu_count())
        with pytest.raises(ValueError, match="threads: expected >= 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_busy_cores(monkeypatch, tmp_path):
    """The load average unless fewer other processes are runnable now; the average alone without /proc."""
    from attngan_fast.cli import common

    proc = tmp_path / "loadavg"
    monkeypatch.setattr(common, "PROC_LOADAVG", str(proc))
    monkeypatch.setattr("os.getloadavg", lambda: (1.8, 1.5, 1.2))
    proc.write_text("1.80 1.50 1.20 1/80 4242\n")  # a job that has just ended: only this process runs
    assert common.busy_cores() == 0.0
    proc.write_text("1.80 1.50 1.20 4/80 4242\n")  # three others running: the average (lower) counts
    assert common.busy_cores() == 1.8
    proc.unlink()
    assert common.busy_cores() == 1.8
    monkeypatch.setattr("os.getloadavg", lambda: (_ for _ in ()).throw(OSError("no load average")))
    assert common.busy_cores() == 0.0
