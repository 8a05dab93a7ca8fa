"""File writes that are atomic, and reads that never run code from a file.

Writes: a reader (or a crash, kill -9 included) never sees a half-written file.

Each helper writes to a temporary file in the destination's folder, flushes and fsyncs it, then
``os.replace``-s it over the destination (atomic on POSIX and Windows within one file system) and
fsyncs the folder where the platform allows. On any error the temporary file is removed and the
destination is left as it was.

>>> atomic_write_json("run.json", {"epoch": 3})          # doctest: +SKIP
>>> atomic_torch_save(model.state_dict(), "netG.pth")   # doctest: +SKIP

Reads: :func:`load_pickle` reads the data pickles (``captions.pickle``, ``filenames.pickle``,
``class_info.pickle``) with an unpickler that admits only plain containers, strings, numbers and
numeric numpy arrays; :func:`load_torch_file` reads ``.pt``/``.pth`` files with
``weights_only=True``. Both raise :class:`FileFormatError` naming the file, what was expected and
what was found.
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Union

import numpy as np
import torch

__all__ = ["atomic_open", "atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_write_json",
           "atomic_pickle_dump", "atomic_torch_save", "FileFormatError", "load_pickle", "load_torch_file",
           "load_state_dict_file", "load_module_state", "describe"]

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO[Any]]:
    """Context manager yielding a temporary file that replaces ``path`` when the block exits cleanly.

    mode: "wb" or "w" (text, with ``encoding``, default utf-8). Parent folders are created. An
    OSError (a full disk, an unwritable folder) names ``path``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode: expected 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        kwargs = {"encoding": encoding or "utf-8"} if mode == "w" else {}
        with os.fdopen(fd, mode, **kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:  # e.g. ENOSPC from a write
            raise OSError(e.errno, e.strerror, str(path)) from None
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


class FileFormatError(ValueError):
    """A file that cannot be read as what it should be; the message names the file, what was
    expected and what was found."""


class _Refused(pickle.UnpicklingError):
    """Raised inside :class:`_DataUnpickler` for anything a data file never holds."""


def _numeric_dtype(*args: Any) -> np.dtype:
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise _Refused("it holds a numpy array of Python objects (only numeric arrays are loaded)")
    return dtype


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for ``bytes`` (latin1 only)."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise _Refused(f"it calls _codecs.encode with encoding {encoding!r} (only latin1 is loaded)")
    return text.encode("latin1")


def _numpy_globals() -> dict[tuple[str, str], Any]:
    """The globals numpy's own pickles of numeric arrays and scalars name, under numpy 1 and 2 paths."""
    reconstruct, scalar = np.arange(1).__reduce__()[0], np.int64(0).__reduce__()[0]
    frombuffer = np.arange(1).__reduce_ex__(5)[0]  # protocol 5 (Python >= 3.14's default)
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): _numeric_dtype,
                                           ("_codecs", "encode"): _latin1_encode}
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = frombuffer
    return allowed


class _DataUnpickler(pickle.Unpickler):
    """Lists, tuples, dicts, str, bytes, numbers, bool, None and numeric numpy arrays; nothing else
    (no class is instantiated and no function called but numpy's array/scalar rebuilders)."""

    _allowed = _numpy_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self._allowed.get((module, name))
        if found is None:
            raise _Refused(f"it references {module}.{name}, which a data file never holds")
        return found


def load_pickle(path: PathLike, expected: str = "a data pickle") -> Any:
    """Read a data pickle (Python 2 or 3, any protocol; Python 2 str as latin1) without running
    code from it: only plain containers, strings, numbers and numeric numpy arrays load.

    Raises :class:`FileFormatError` naming ``path`` and ``expected`` for anything else (a crafted
    pickle that would call ``os.system``, a truncated or empty file, a directory, ...).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f, encoding="latin1").load()
    except _Refused as e:
        raise FileFormatError(f"{path}: refused to load {expected}: {e}; nothing in it was run") from None
    except pickle.UnpicklingError as e:
        raise FileFormatError(f"{path}: cannot read {expected}: not a valid pickle ({e})") from None
    except EOFError:
        found = "an empty file" if path.stat().st_size == 0 else "a truncated pickle"
        raise FileFormatError(f"{path}: cannot read {expected}: found {found}") from None
    except OSError as e:
        raise FileFormatError(f"{path}: cannot read {expected}: {e.strerror or e}") from None
    except Exception as e:  # malformed content: wrong opcodes' arguments, bad numpy state, ...
        raise FileFormatError(f"{path}: cannot read {expected}: a damaged pickle ({type(e).__name__}: {e})") from None


def load_torch_file(path: PathLike, expected: str, map_location: Union[str, torch.device] = "cpu",
                    mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)``: tensors and plain containers, never code.

    expected: what the file should be, for the messages (e.g. "a training snapshot"). Raises
    FileNotFoundError for a missing file, :class:`FileFormatError` for anything unreadable (a
    directory, an empty, text, truncated or non-torch file, a pickle with other objects), each
    naming the file, ``expected`` and what was found.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (expected {expected})")
    if path.is_dir():
        raise FileFormatError(f"{path}: expected {expected}, found a directory")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise FileFormatError(f"{path}: cannot read {expected}: {e.strerror or e}") from None
    if not head:
        raise FileFormatError(f"{path}: expected {expected}, found an empty file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:  # torch's refusal, or not a pickle at all
        refused = re.search(r"^.*unsupported global.*$", str(e), re.IGNORECASE | re.MULTILINE)
        if "weights only" in str(e).lower() and refused:
            raise FileFormatError(f"{path}: refused to load {expected}: it holds objects other than tensors and "
                                  f"plain containers, which are never loaded (weights_only=True): "
                                  f"{refused.group(0).strip()}") from None
        raise FileFormatError(f"{path}: expected {expected}, found {_describe_head(head)}") from None
    except Exception:  # truncated zip (RuntimeError), text (KeyError / UnpicklingError), ...
        raise FileFormatError(f"{path}: expected {expected}, found {_describe_head(head)}") from None


def _describe_head(head: bytes) -> str:
    """What a file that torch cannot load looks like, from its first bytes."""
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated zip archive"
    if head.startswith(b"\x80"):
        return "a damaged or truncated pickle"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"a file that is not a torch file (first bytes {head[:8]!r})"
    return f"a text file (starting {text[:24]!r})"


def describe(obj: Any) -> str:
    """A short description of a loaded object, for "expected X, found Y" messages."""
    if isinstance(obj, torch.Tensor):
        return f"a tensor of shape {tuple(obj.shape)}"
    if isinstance(obj, Mapping):
        keys = list(obj)
        shown = ", ".join(map(repr, keys[:4])) + (", ..." if len(keys) > 4 else "")
        if keys and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return f"a state_dict of {len(keys)} tensors ({shown})"
        if isinstance(obj.get("format"), str):
            return f"a {obj['format']!r} file (keys {shown})"
        return f"a dict with keys {shown}" if keys else "an empty dict"
    if isinstance(obj, (list, tuple)):
        return f"a {type(obj).__name__} of {len(obj)} items"
    return f"a {type(obj).__name__}"


def load_state_dict_file(path: PathLike, expected: str) -> dict[str, torch.Tensor]:
    """A ``{name: tensor}`` file (``netG_epoch_600.pth``, ``text_encoder200.pth``, ...) read by
    :func:`load_torch_file`; :class:`FileFormatError` naming what was found if it holds anything else."""
    state = load_torch_file(path, expected)
    if not (isinstance(state, Mapping) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                         for k, v in state.items())):
        raise FileFormatError(f"{path}: expected {expected}, found {describe(state)}")
    return dict(state)


def load_module_state(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: PathLike,
                      expected: str) -> None:
    """``module.load_state_dict(state)`` (strict); :class:`FileFormatError` naming ``path`` when the
    keys or shapes do not match (e.g. an image encoder's file given as the text encoder)."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:400]
        raise FileFormatError(f"{path}: expected {expected}, found tensors that do not match "
                              f"{type(module).__name__} ({detail})") from None


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
