"""Triton-style micro-batching: merge queued requests into one model call, off the event loop.

One worker takes requests from the front of the queue until the batch holds `max_batch_size`
images or `max_queue_delay_s` has passed since the first of them arrived, runs the merged batch in
the model thread and hands each request its own results. A request is never split across batches
(so a prompt group sent in one request reaches the scorer whole); the queue is bounded in images.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

log = logging.getLogger("rewardflow_kit")

In = TypeVar("In")
Out = TypeVar("Out")


class QueueFull(Exception):
    """The queue has no room for the request's images; the caller answers 429."""


@dataclass
class _Job(Generic[In, Out]):
    item: In
    size: int
    future: asyncio.Future[Out]
    enqueued: float = field(default_factory=time.perf_counter)
    started: float = 0.0


@dataclass
class Timed(Generic[Out]):
    """A result with the time its request waited in the queue and the time of its model call."""

    value: Out
    queue_s: float
    compute_s: float


class MicroBatcher(Generic[In, Out]):
    """Batches submitted items; `run_batch(items) -> outputs` runs in `executor` (the model thread)."""

    def __init__(
        self,
        run_batch: Callable[[list[In]], Sequence[Out]],
        executor: Executor,
        max_batch_size: int,
        max_queue_delay_s: float,
        max_queue_size: int,
        on_batch: Callable[[int], None] | None = None,
        on_depth: Callable[[int], None] | None = None,
    ) -> None:
        self._run_batch = run_batch
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.max_queue_size = max(max_queue_size, max_batch_size)  # one full batch must always fit
        self._on_batch = on_batch or (lambda size: None)
        self._on_depth = on_depth or (lambda depth: None)
        self._pending: collections.deque[_Job[In, Out]] = collections.deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    @property
    def queued_items(self) -> int:
        """Images waiting for a model call (not counting the batch being scored)."""
        return self._queued

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._work(), name="rewardflow-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.cancel()

    async def submit(self, item: In, size: int) -> Timed[Out]:
        """Queue one request of `size` images and wait for its result; raises QueueFull."""
        if size > self.max_batch_size:
            raise ValueError(f"a request of {size} images exceeds max_batch_size {self.max_batch_size}")
        if self._queued + size > self.max_queue_size:
            raise QueueFull(
                f"the queue holds {self._queued} images; {size} more would exceed max_queue_size {self.max_queue_size}"
            )
        job: _Job[In, Out] = _Job(item, size, asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._queued += size
        self._on_depth(self._queued)
        self._wakeup.set()
        value = await job.future
        done = time.perf_counter()
        return Timed(value, queue_s=job.started - job.enqueued, compute_s=done - job.started)

    def _take_batch(self) -> list[_Job[In, Out]]:
        jobs = [self._pending.popleft()]
        total = jobs[0].size
        while self._pending and total + self._pending[0].size <= self.max_batch_size:
            job = self._pending.popleft()
            jobs.append(job)
            total += job.size
        self._queued -= total
        self._on_depth(self._queued)
        return jobs

    def _batch_is_full(self) -> bool:
        total = 0
        for job in self._pending:
            if total + job.size > self.max_batch_size:
                return True  # the next request would not fit: waiting longer cannot grow this batch
            total += job.size
        return total >= self.max_batch_size

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            deadline = self._pending[0].enqueued + self.max_queue_delay_s
            while not self._batch_is_full():
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            jobs = [job for job in self._take_batch() if not job.future.cancelled()]
            if not jobs:
                continue
            started = time.perf_counter()
            for job in jobs:
                job.started = started
            self._on_batch(sum(job.size for job in jobs))
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_batch, [job.item for job in jobs])
            except asyncio.CancelledError:
                for job in jobs:
                    if not job.future.done():
                        job.future.cancel()
                raise
            except Exception as exc:  # run_batch is expected to turn item problems into results
                log.exception("a batch of %d requests failed", len(jobs))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            for job, output in zip(jobs, outputs, strict=True):
                if not job.future.done():
                    job.future.set_result(output)


class ModelThread(Executor):
    """A single daemon thread that runs all model work (load, warm-up, batches) in order.

    Daemon, unlike ThreadPoolExecutor's workers, so a SIGTERM during a long model load still exits.
    One thread because models (CUDA contexts, PaddleOCR, tokenizers) are happiest on one thread.
    """

    def __init__(self, name: str = "rewardflow-model") -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, functools.partial(fn, **kwargs) if kwargs else fn, args))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._jobs.put(None)
        if wait:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)
