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


def test_set_threads(monkeypatch):
    import torch

    from attngan_fast.cli.common import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setattr("os.getloadavg", lambda: (1000.0, 0.0, 0.0))
        assert set_threads(None) == 1  # a fully busy machine: one thread
        monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))
        torch.set_num_threads(before)
        assert set_threads(None) == min(before, __import__("os").cpu_count())
        with pytest.raises(ValueError, match="threads: expected >= 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)
