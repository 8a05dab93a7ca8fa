"""Serving: an HTTP API and a web page for text-to-image, with dynamic batching.

>>> from attngan_fast.serving import ServeOptions, create_app                       # doctest: +SKIP
>>> app = create_app(Generator.from_checkpoint("checkpoint_epoch_30.pt"), ServeOptions(max_batch=32))  # doctest: +SKIP

``create_app`` needs FastAPI (``pip install "attngan_fast[serve]"``); the rest of this package
(options, the batcher, the engine) does not. See :mod:`attngan_fast.serving.app` for the routes.
"""
from .batcher import Batcher, BatchStats, QueueFull
from .engine import Engine, FieldError, Job, JobResult
from .options import ServeOptions

__all__ = ["Batcher", "BatchStats", "Engine", "FieldError", "Job", "JobResult", "QueueFull", "ServeOptions",
           "create_app"]


def __getattr__(name: str):
    """``create_app``, imported on first use (it needs FastAPI)."""
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'attngan_fast.serving' has no attribute {name!r}")
