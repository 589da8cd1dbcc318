"""Scoring of sampled batches on a background event loop, so that scoring overlaps sampling."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np
from rewardflow_proto.client import RewardClient, RewardResult


class RewardScorer:
    """Owns a RewardClient on its own event-loop thread; `submit` returns at once with a Future.

    The training loop submits batch i, samples batch i+1 while the services score batch i, and
    collects results through `result`, which records how long it blocked (`wait_s`): the time the
    loop waited on rewards, for the `reward_wait_share` metric.
    """

    def __init__(
        self,
        endpoints: dict[str, Sequence[str] | str],
        weights: dict[str, float],
        timeout_s: float = 60.0,
        max_retries: int = 4,
        api_key: str | None = None,
    ) -> None:
        self.client = RewardClient(endpoints, weights, timeout_s=timeout_s, max_retries=max_retries, api_key=api_key)
        self.wait_s = 0.0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="rewardflow-scorer", daemon=True)
        self._thread.start()

    def submit(
        self,
        images: np.ndarray,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> Future[RewardResult]:
        """Start scoring images (N, H, W, 3) uint8 with their prompts; returns immediately."""
        if self._loop.is_closed():
            raise RuntimeError("RewardScorer.submit after close(): create a new scorer")
        images = np.ascontiguousarray(images)  # the caller may reuse its buffer while we score
        coro = self.client.score(images, list(prompts), metadata=None if metadata is None else list(metadata))
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def result(self, future: Future[RewardResult], timeout_s: float | None = None) -> RewardResult:
        """Block until the batch is scored; adds the time blocked to `wait_s`."""
        start = time.perf_counter()
        try:
            return future.result(timeout=timeout_s)
        finally:
            self.wait_s += time.perf_counter() - start

    def score(
        self,
        images: np.ndarray,
        prompts: Sequence[str],
        metadata: Sequence[dict[str, Any] | None] | None = None,
    ) -> RewardResult:
        """Score and wait (eval, where nothing else can run meanwhile)."""
        return self.result(self.submit(images, prompts, metadata))

    def pop_wait_s(self) -> float:
        """The waiting time accumulated since the last call, and reset it."""
        wait, self.wait_s = self.wait_s, 0.0
        return wait

    def close(self) -> None:
        """Close the connections and stop the loop thread."""
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.client.aclose(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
