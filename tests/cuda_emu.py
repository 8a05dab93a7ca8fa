"""The CUDA kernels of csrc/cuda/ executed on the CPU: building and routing the emulated extension.

``load()`` compiles csrc/emu/*_emu.cpp (csrc/cuda/*.cu as host C++ against the CUDA
emulation of csrc/emu/cuda_emu.h, docs/cuda_emulation.md) with ``torch.utils.cpp_extension.load``
into ``build/cuda_emu/`` (or ``$ATTNGAN_CUDA_EMU_BUILD``; ninja: rebuilt only when a source changes) and loads it: its kernels
register as ``attngan_fast_emu::<op>`` on CPU tensors, with the schemas of ``attngan_fast::<op>``.
``routed()`` makes ``attngan_fast::<op>`` run them for CPU tensors while it is active, so that the
public ops (autograd, running statistics, the modules) exercise the CUDA code path.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import torch

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "csrc" / "emu" / "blocks_emu.cpp", ROOT / "csrc" / "emu" / "down_blocks_emu.cpp"]
BUILD_DIR = Path(os.environ.get("ATTNGAN_CUDA_EMU_BUILD", ROOT / "build" / "cuda_emu"))  # ninja's cache
OPS = ("upsample_conv3x3", "upsample_conv3x3_backward", "up_block", "up_block_backward", "res_block",
       "res_block_backward", "down_block", "down_block_backward")
NAMESPACE = "attngan_fast_emu"

_state: dict = {}


def can_build() -> bool:
    """A C++ compiler and ninja are there (torch.utils.cpp_extension needs both)."""
    return shutil.which(os.environ.get("CXX", "c++")) is not None and shutil.which("ninja") is not None


def load() -> float:
    """Build (or reuse) and load the emulated extension once per process; the build's seconds."""
    if "seconds" in _state:
        return _state["seconds"]
    from torch.utils.cpp_extension import load as load_extension

    import attngan_fast  # noqa: F401 -- loads attngan_fast._C, whose schemas are copied

    lib = torch.library.Library(NAMESPACE, "DEF")
    for op in OPS:
        schema = str(getattr(torch.ops.attngan_fast, op).default._schema)
        lib.define(schema.removeprefix("attngan_fast::"))
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    load_extension(name="attngan_fast_cuda_emu", sources=[str(s) for s in SOURCES],
                   extra_include_paths=[str(ROOT / "csrc")], extra_cflags=["-O2", "-DATTNGAN_CUDA_EMU=1"],
                   build_directory=str(BUILD_DIR), is_python_module=False, verbose=False)
    _state.update(lib=lib, seconds=time.perf_counter() - start)
    return _state["seconds"]


@contextlib.contextmanager
def routed() -> Iterator[None]:
    """While active, ``attngan_fast::<op>`` on CPU tensors runs ``attngan_fast_emu::<op>``."""
    load()
    lib = torch.library.Library("attngan_fast", "IMPL")
    try:
        for op in OPS:
            lib.impl(op, getattr(torch.ops, NAMESPACE).__getattr__(op).default, "CPU", allow_override=True)
        yield
    finally:
        lib._destroy()
