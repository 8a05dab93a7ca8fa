"""Run folders of GAN training: what a run writes, refusing a reused folder, one writer at a time.

A folder *holds a run* when it has a snapshot (``checkpoint_epoch_*.pt``), an original-format
export (``netG_epoch_*.pth``, ``netD{i}.pth``), ``log.jsonl`` or ``run.json``. :func:`open_run_folder`
refuses such a folder unless the run is continued (the snapshot resumed from lies in it) or
``overwrite`` clears it: only those files and the sample pictures ``samples/step_*.png`` are
removed; anything else in the folder stays.

:class:`RunLock` (``train.lock``: the writer's pid, host and start time as JSON) keeps two writers
apart. It is created complete and atomically (a hard link of a written file). A lock whose process
is gone (same host, pid not running) is stale: it is taken over with a message. A live holder, or
a holder on another host (which cannot be checked from here), makes :func:`open_run_folder` raise
a :class:`RunFolderError` naming it. Two processes taking over the same stale lock in the same
instant is the one race left. Once the lock is held, the temporary files of writes killed half-way
(``.NAME.XXXXXXXX.tmp``, :mod:`attngan_fast.io`) are removed.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional, Union

__all__ = ["LOCK_NAME", "RunFolderError", "RunLock", "run_files", "clear_run", "remove_stale_tmp",
           "open_run_folder"]

LOCK_NAME = "train.lock"
PathLike = Union[str, os.PathLike]
_RUN_FILE_RE = re.compile(r"^(checkpoint_epoch_\d+\.pt|netG_epoch_\d+\.pth|netD\d+\.pth|log\.jsonl|run\.json)$")
_SAMPLE_RE = re.compile(r"^step_\d+_(g\d+|attention)\.png$")


class RunFolderError(ValueError):
    """An output folder that cannot be used as asked (it holds another run, or another process writes to it)."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_files(out_dir: PathLike) -> list[Path]:
    """The files of ``out_dir`` that mark a run (see the module docstring), sorted."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and _RUN_FILE_RE.match(p.name))


def clear_run(out_dir: PathLike) -> int:
    """Delete the run files of ``out_dir`` and its sample pictures (``samples/`` too when it is then
    empty); returns the number of files removed."""
    folder = Path(out_dir)
    samples = folder / "samples"
    files = run_files(folder)
    if samples.is_dir():
        files += [p for p in samples.iterdir() if p.is_file() and _SAMPLE_RE.match(p.name)]
    for path in files:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # kept when it holds other files
        samples.rmdir()
    return len(files)


def remove_stale_tmp(out_dir: PathLike) -> list[Path]:
    """Delete the temporary files (``.*.tmp``) that killed atomic writes left in ``out_dir``; only
    safe while holding its :class:`RunLock`. Returns the paths removed."""
    folder = Path(out_dir)
    found = sorted(p for p in folder.glob(".*.tmp") if p.is_file()) if folder.is_dir() else []
    for path in found:
        path.unlink(missing_ok=True)
    return found


def _read_holder(path: Path) -> Optional[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # e.g. an invalid pid value
        return False
    return True


class RunLock:
    """``out_dir/train.lock`` held from :meth:`acquire` to :meth:`release` (or as a context manager).

    log: where the stale-lock message goes (default: stderr).
    """

    def __init__(self, out_dir: PathLike, log: Callable[[str], None] = _stderr) -> None:
        self.folder = Path(out_dir)
        self.path = self.folder / LOCK_NAME
        self.log = log
        self.holder = {"pid": os.getpid(), "host": socket.gethostname(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.held = False

    def acquire(self) -> None:
        """Take the lock; RunFolderError if a live process (or one on another host) holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        candidate = self.folder / f".{LOCK_NAME}.{os.getpid()}"
        candidate.write_text(json.dumps(self.holder) + "\n", encoding="utf-8")
        try:
            for _ in range(3):
                try:
                    os.link(candidate, self.path)  # fails when the lock exists; never a half-written lock
                    self.held = True
                    return
                except FileExistsError:
                    self._take_over_if_stale()
            raise RunFolderError(f"{self.path}: the lock keeps changing hands; is another training starting here?")
        finally:
            candidate.unlink(missing_ok=True)

    def _take_over_if_stale(self) -> None:
        holder = _read_holder(self.path)
        if holder is None:
            if not self.path.exists():  # released meanwhile
                return
            raise RunFolderError(f"{self.path}: unreadable lock file; delete it if no training writes to {self.folder}")
        pid, host, started = holder["pid"], holder.get("host", "?"), holder.get("started", "?")
        if host != self.holder["host"]:
            raise RunFolderError(
                f"{self.folder} is locked by pid {pid} on host {host} (since {started}), which this host "
                f"cannot check: if that training has ended, delete {self.path}")
        if _running(pid):
            raise RunFolderError(
                f"{self.folder} is in use by another training process (pid {pid}, since {started}; lock "
                f"{self.path}): wait for it to end or stop it, or choose another --out")
        if _read_holder(self.path) == holder:  # still the stale one
            self.path.unlink(missing_ok=True)
            self.log(f"{self.path}: taking over the stale lock of pid {pid} (started {started}), which is not running")

    def release(self) -> None:
        """Drop the lock if this process holds it."""
        if self.held and _read_holder(self.path) == self.holder:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def open_run_folder(out_dir: PathLike, *, resume: Optional[PathLike] = None, overwrite: bool = False,
                    keep: Optional[PathLike] = None, log: Callable[[str], None] = _stderr) -> Iterator[RunLock]:
    """Lock ``out_dir`` for one training run, check that it may be written, clean it; the lock is
    released when the block exits.

    resume: the snapshot the run continues from (the folder may hold a run when it lies in it).
    overwrite: clear the run the folder holds (see :func:`clear_run`) instead of refusing it.
    keep: a file the run reads (``TRAIN.NET_G``) that ``overwrite`` must not delete.
    RunFolderError when the folder holds another run, or another process holds its lock.
    """
    folder = Path(out_dir)
    if resume is not None and overwrite:
        raise RunFolderError("overwrite and resume exclude each other (overwrite would delete the run to resume)")
    with RunLock(folder, log) as lock:
        held = run_files(folder)
        continues = resume is not None and Path(resume).resolve().parent == folder.resolve()
        if held and not continues:
            if keep is not None and Path(keep).resolve().parent == folder.resolve():
                raise RunFolderError(f"TRAIN.NET_G {keep} lies in the output folder {folder}, which holds a run: "
                                     "choose another output folder")
            if not overwrite:
                names = ", ".join(p.name for p in held[:4]) + (", ..." if len(held) > 4 else "")
                raise RunFolderError(
                    f"{folder} holds a training run ({names}): continue it with --resume, clear it with "
                    "--overwrite, or choose another --out")
            log(f"{folder}: overwrite: removed {clear_run(folder)} files of the previous run")
        stale = remove_stale_tmp(folder)
        if stale:
            log(f"{folder}: removed {len(stale)} temporary file(s) of interrupted writes")
        yield lock
