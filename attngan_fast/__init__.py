"""attngan_fast: AttnGAN (Xu et al., CVPR 2018) with fused kernels, checkpoint compatible.

>>> import attngan_fast
>>> attngan_fast.extension_info()["cpu"]
True
"""
from . import config, ops
from ._extension import extension_info
from ._version import __version__
from .accelerate import AccelerationReport, accelerate, accelerate_losses
from .backend import backend, get_backend, set_backend
from .cpu_memory import retain_freed_memory

__all__ = ["AccelerationReport", "Generator", "__version__", "accelerate", "accelerate_losses", "backend", "config",
           "extension_info", "get_backend", "ops", "retain_freed_memory", "set_backend"]


def __getattr__(name: str):
    """``attngan_fast.Generator`` (imported on first use: it pulls in the models and data code)."""
    if name == "Generator":
        from .sampling import Generator

        return Generator
    raise AttributeError(f"module 'attngan_fast' has no attribute {name!r}")
