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
    with pytest.raises(SystemExit):
        main([])
    assert "COMMAND" in capsys.readouterr().err
