"""Atomic file writes: a reader (or a crash, kill -9 included) never sees a half-written file.

Each helper writes to a temporary file in the destination's folder, flushes and fsyncs it, then
``os.replace``-s it over the destination (atomic on POSIX and Windows within one file system) and
fsyncs the folder where the platform allows. On any error the temporary file is removed and the
destination is left as it was.

>>> atomic_write_json("run.json", {"epoch": 3})          # doctest: +SKIP
>>> atomic_torch_save(model.state_dict(), "netG.pth")   # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Union

import torch

__all__ = ["atomic_open", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_pickle_dump", "atomic_torch_save"]

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Context manager yielding a temporary file that replaces ``path`` when the block exits cleanly.

    mode: "wb" or "w" (text, with ``encoding``, default utf-8). Parent folders are created.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        kwargs = {"encoding": encoding or "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write(path: PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(binary_file)`` on a temporary file, then move it over ``path``."""
    with atomic_open(path, "wb") as f:
        write(f)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: PathLike, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON (with a trailing newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_pickle_dump(obj: Any, path: PathLike, protocol: int = 2) -> None:
    """Pickle ``obj`` to ``path`` atomically (protocol 2 by default, as the original's pickles)."""
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=protocol))


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save(obj, path)``, atomically."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
