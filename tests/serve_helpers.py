"""Helpers of the serving tests: optional modules (required under CI=true), and
``benchmarks/serve_load.py`` (its ``serve_process`` and ``run_load``) as a module."""
from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def need(name: str) -> ModuleType:
    """``name`` imported; a missing module skips the test, except in CI (CI=true), where it fails."""
    if IN_CI:
        return importlib.import_module(name)
    return pytest.importorskip(name)


def serve_load() -> ModuleType:
    """benchmarks/serve_load.py: ``serve_process(files, *options)`` runs ``attngan-fast serve`` on
    a free loopback port, ``run_load(url, clients, ...)`` drives it."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"
    spec = importlib.util.spec_from_file_location("serve_load", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
