"""Dynamic batching: a bounded queue of jobs and one worker thread that runs them in groups.

>>> b = Batcher(lambda jobs: [2 * j for j in jobs], rows=lambda j: 1, max_batch=4, max_wait_s=0.01, queue_size=8)
>>> b.start()
>>> b.submit(21).result(timeout=5)
42
>>> b.stop()
"""
from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Optional, TypeVar

__all__ = ["Batcher", "BatchStats", "QueueFull"]

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(RuntimeError):
    """The queue holds ``queue_size`` jobs already (the caller should answer 503)."""


@dataclass
class BatchStats:
    """Counts since start: forwards run, jobs answered, rows, and how many forwards had k jobs."""

    batches: int = 0
    jobs: int = 0
    rows: int = 0
    rejected: int = 0
    jobs_per_batch: Counter = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "jobs": self.jobs, "rows": self.rows, "rejected": self.rejected,
                "jobs_per_batch": {str(k): v for k, v in sorted(self.jobs_per_batch.items())}}


class Batcher(Generic[T, R]):
    """Runs ``process(jobs) -> results`` (one result per job, same order) on a worker thread.

    rows(job): the job's size; a group holds at most ``max_batch`` rows (a bigger job runs alone).
    After the first job of a group, the worker takes the jobs already queued and waits up to
    ``max_wait_s`` for more. mergeable(job) False: the job always runs alone.
    ``submit`` raises :class:`QueueFull` when ``queue_size`` jobs wait; a job whose future was
    cancelled before the worker took it is skipped.
    """

    def __init__(self, process: Callable[[list[T]], list[R]], rows: Callable[[T], int], max_batch: int,
                 max_wait_s: float, queue_size: int, mergeable: Callable[[T], bool] = lambda job: True) -> None:
        if max_batch < 1 or queue_size < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch >= 1, queue_size >= 1 and max_wait_s >= 0 expected, got "
                             f"{max_batch}, {queue_size}, {max_wait_s}")
        self._process, self._rows, self._mergeable = process, rows, mergeable
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._queue: queue.Queue[tuple[T, Future]] = queue.Queue(maxsize=queue_size)
        self._held: Optional[tuple[T, Future]] = None  # taken from the queue, did not fit the last group
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.stats = BatchStats()

    def depth(self) -> int:
        """Jobs waiting (approximate)."""
        return self._queue.qsize() + (self._held is not None)

    def submit(self, job: T) -> Future:
        """Queue ``job``; its future gets the result (or the exception ``process`` raised)."""
        if self._stop.is_set():
            raise RuntimeError("the batcher is stopped")
        future: Future = Future()
        try:
            self._queue.put_nowait((job, future))
        except queue.Full:
            self.stats.rejected += 1
            raise QueueFull(f"{self._queue.maxsize} requests are already waiting") from None
        return future

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="attngan-batcher", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the group in progress, then fail the jobs still queued."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        pending = [self._held[1]] if self._held else []  # already marked running
        self._held = None
        while True:
            try:
                future = self._queue.get_nowait()[1]
            except queue.Empty:
                break
            if future.set_running_or_notify_cancel():
                pending.append(future)
        for future in pending:
            future.set_exception(RuntimeError("the server is shutting down"))

    # ------------------------------------------------------------------ worker
    def _take(self, timeout: Optional[float]) -> Optional[tuple[T, Future]]:
        """The held job, else the next queued job that was not cancelled (None: none in time)."""
        if self._held is not None:  # already marked running
            item, self._held = self._held, None
            return item
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            try:
                item = self._queue.get_nowait() if remaining is not None and remaining <= 0 \
                    else self._queue.get(timeout=remaining)
            except queue.Empty:
                return None
            if item[1].set_running_or_notify_cancel():
                return item

    def _group(self) -> Optional[list[tuple[T, Future]]]:
        first = self._take(timeout=0.1)
        if first is None:
            return None
        group, rows = [first], self._rows(first[0])
        deadline = time.monotonic() + self.max_wait_s
        while rows < self.max_batch and self._mergeable(first[0]):
            item = self._take(timeout=max(0.0, deadline - time.monotonic()))
            if item is None:
                break
            if rows + self._rows(item[0]) > self.max_batch or not self._mergeable(item[0]):
                self._held = item
                break
            group.append(item)
            rows += self._rows(item[0])
        return group

    def _loop(self) -> None:
        while not self._stop.is_set():
            group = self._group()
            if group is None:
                continue
            jobs = [job for job, _ in group]
            try:
                results = self._process(jobs)
                if len(results) != len(jobs):
                    raise RuntimeError(f"process returned {len(results)} results for {len(jobs)} jobs")
            except BaseException as e:  # noqa: BLE001 - every waiting caller gets the error
                for _, future in group:
                    future.set_exception(e)
                continue
            self.stats.batches += 1
            self.stats.jobs += len(jobs)
            self.stats.rows += sum(self._rows(j) for j in jobs)
            self.stats.jobs_per_batch[len(jobs)] += 1
            for (_, future), result in zip(group, results):
                future.set_result(result)
