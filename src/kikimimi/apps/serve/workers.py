"""A bounded pool for the embedding work of the server: a few worker threads and a short queue.

Model calls (text and audio embedding, captions, re-scans) run in :class:`BoundedPool` threads so the event
loop stays free to answer status, page and audio requests. At most ``workers + queue_limit`` jobs are
accepted at once; one more raises :class:`PoolFull` at once (the app answers 503 with ``Retry-After``)
instead of letting a queue, and the latency of everyone behind it, grow without bound.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["BoundedPool", "PoolFull"]

T = TypeVar("T")


class PoolFull(RuntimeError):
    """Every worker is busy and the queue is full; retry after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        self.retry_after_s = int(retry_after_s)
        super().__init__(f"the server is busy; retry in {self.retry_after_s} s")


class BoundedPool:
    """``workers`` threads plus at most ``queue_limit`` waiting jobs.

    ``submit`` returns a :class:`concurrent.futures.Future`; ``await pool.run(fn, *args)`` is the form for
    async handlers. ``stats()`` tells how many jobs run or wait, and how many were turned away.
    """

    def __init__(self, workers: int = 1, queue_limit: int = 8, retry_after_s: int = 2) -> None:
        if workers < 1 or queue_limit < 0:
            raise ValueError(f"workers must be >= 1 and queue_limit >= 0, got {workers} and {queue_limit}")
        self.workers, self.queue_limit, self.retry_after_s = int(workers), int(queue_limit), int(retry_after_s)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kikimimi-serve")
        self._slots = threading.BoundedSemaphore(self.workers + self.queue_limit)
        self._lock = threading.Lock()
        self._accepted = self._rejected = self._done = 0

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Queue ``fn(*args, **kwargs)``; raises :class:`PoolFull` when no slot is free."""
        if not self._slots.acquire(blocking=False):
            with self._lock:
                self._rejected += 1
            raise PoolFull(self.retry_after_s)
        with self._lock:
            self._accepted += 1
        try:
            future = self._executor.submit(fn, *args, **kwargs)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(self._release)
        return future

    def _release(self, _: Future) -> None:
        with self._lock:
            self._done += 1
        self._slots.release()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` in the pool and await its result (raises :class:`PoolFull` at once when full)."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def stats(self) -> dict[str, int]:
        """``workers``, ``queue_limit``, ``busy`` (running or waiting), ``accepted``, ``rejected``, ``done``."""
        with self._lock:
            return {"workers": self.workers, "queue_limit": self.queue_limit, "busy": self._accepted - self._done,
                    "accepted": self._accepted, "rejected": self._rejected, "done": self._done}

    def shutdown(self) -> None:
        """Stop accepting work and wait for the running jobs."""
        self._executor.shutdown(wait=True, cancel_futures=True)
