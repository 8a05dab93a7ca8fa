"""SIGINT / SIGTERM during training: finish the step, write a snapshot, stop (exit code 128 + signal).

While a :class:`StopSignals` block is active, the first SIGINT or SIGTERM only records itself
(:attr:`StopSignals.received`) and prints a note; the training loop polls it after every step.
Later signals print a note and are otherwise ignored, so the snapshot being written is never cut
short (kill -9 still ends the process at once; earlier snapshots stay intact, see
:mod:`attngan_fast.io`). The notes are written with ``os.write`` (safe inside a signal handler).
Processes forked meanwhile (data loader workers, which get Ctrl-C's SIGINT too) inherit the
handler and ignore the signals: the training process ends them.
"""
from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any, Optional

__all__ = ["STOP_SIGNALS", "StopSignals", "exit_code"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def exit_code(signum: int) -> int:
    """The shell's status of a process ended by ``signum``: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + int(signum)


class StopSignals:
    """Context manager catching SIGINT and SIGTERM (see the module docstring); a no-op outside the
    main thread, where Python cannot install handlers."""

    def __init__(self) -> None:
        self.received: Optional[int] = None
        self._previous: dict[int, Any] = {}
        self._pid = os.getpid()

    def __enter__(self) -> "StopSignals":
        self._pid = os.getpid()
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        if os.getpid() != self._pid:  # a forked worker
            return
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = signum
            note = f"\n{name}: stopping after the current step, writing a snapshot\n"
        else:
            note = f"\n{name}: already stopping; the snapshot is being written, please wait\n"
        os.write(2, note.encode())
