"""Scoring of sampled batches on a background event loop, so that scoring overlaps sampling.

Rules (issue 17): every image gets its score or the run stops with an error naming the reward, the
URLs, the images and the last cause, never a default or a second count (the client retries a chunk
with the same request id and uses exactly one answer); a batch whose every replica is down is
re-sent, under the request id of its first attempt, until `outage_grace_s` has passed, then
RewardOutage (the loop checkpoints and exits); an image without a finite score stops the run
(InvalidScores) or is dropped from the advantages and counted (`screen_rewards`), as
reward.on_invalid_score says. In a multi-process run a failure on one rank stops
every rank with the same error (agreement.py).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Literal, NamedTuple

import numpy as np
from rewardflow_proto.client import RewardClient, RewardResult, RewardServiceError, new_request_id

log = logging.getLogger("rewardflow_trainer")
OUTAGE_RETRY_S = 5.0
"""Seconds between re-sends of a batch while every replica of a reward is down."""


class RewardOutage(RewardServiceError):
    """Every replica of a reward stayed unreachable for the whole grace period."""

    def __init__(self, cause: RewardServiceError, waited_s: float) -> None:
        reason = f"down for {waited_s:.0f} s (reward.outage_grace_s); last cause: {cause.reason}"
        super().__init__(cause.service, cause.rewards, cause.urls, reason, cause.status, cause.images)
        self.waited_s = waited_s


class _Batch(NamedTuple):
    """What a batch was submitted with, kept for re-sends: the same images, prompts, metadata and request id."""

    images: np.ndarray
    prompts: list[str]
    metadata: list | None
    request_id: str


class InvalidScores(ValueError):
    """Images without a finite score under reward.on_invalid_score = stop."""


def _is_outage(error: RewardServiceError) -> bool:
    # A status means a service answered and refused the request (4xx): waiting will not change that.
    return error.status is None


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
        outage_grace_s: float = 0.0,
    ) -> None:
        self.client = RewardClient(endpoints, weights, timeout_s=timeout_s, max_retries=max_retries, api_key=api_key)
        self.outage_grace_s = outage_grace_s
        self.on_wait: Callable[[str], None] = lambda phase: None
        """Called with "scoring" when result() is about to block, "waiting_for_services" during an outage."""
        self._inputs: dict[Future[RewardResult], _Batch] = {}
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
        inputs = _Batch(images, list(prompts), None if metadata is None else list(metadata), new_request_id())
        future = self._send(inputs)
        self._inputs[future] = inputs
        return future

    def _send(self, batch: _Batch) -> Future[RewardResult]:
        # Every send of a batch carries its one id: a service that scored an attempt whose answer was lost
        # (a timeout, a dropped connection) answers the re-send from its cache instead of scoring it twice.
        score = self.client.score(batch.images, batch.prompts, metadata=batch.metadata, request_id=batch.request_id)
        return asyncio.run_coroutine_threadsafe(score, self._loop)

    def result(self, future: Future[RewardResult], timeout_s: float | None = None) -> RewardResult:
        """Block until the batch is scored; adds the time blocked to `wait_s`.

        While every replica of a reward is down the batch is re-sent every OUTAGE_RETRY_S seconds for up
        to `outage_grace_s`, then RewardOutage; a service that refuses the batch (4xx) raises at once.
        """
        start = time.perf_counter()
        inputs = self._inputs.pop(future, None)
        down_since: float | None = None
        try:
            if not future.done():
                self.on_wait("scoring")
            while True:
                try:
                    return future.result(timeout=timeout_s)
                except RewardServiceError as error:
                    if inputs is None or not _is_outage(error):
                        raise
                    down_since = time.monotonic() if down_since is None else down_since
                    waited = time.monotonic() - down_since
                    if waited >= self.outage_grace_s:
                        raise (RewardOutage(error, waited) if self.outage_grace_s > 0 else error) from None
                    log.warning(
                        "reward service down, retrying for %.0f s more: %s", self.outage_grace_s - waited, error
                    )
                    self.on_wait("waiting_for_services")
                    time.sleep(min(OUTAGE_RETRY_S, self.outage_grace_s - waited))
                    future = self._send(inputs)
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


def invalid_items(results: Sequence[RewardResult]) -> list[str]:
    """One line per image of the batches without a finite total: its index, each reward's value or item error."""
    lines: list[str] = []
    offset = 0
    for result in results:
        for i in np.flatnonzero(~np.isfinite(result.total)):
            values = ", ".join(f"{name}={result.components[name][i]}" for name in result.components)
            errors = result.errors[i] or {}
            causes = "; ".join(f"{service}: {e.code}: {e.message}" for service, e in errors.items())
            lines.append(f"image {offset + int(i)}: {values}" + (f" ({causes})" if causes else ""))
        offset += len(result)
    return lines


def screen_rewards(
    results: Sequence[RewardResult], policy: Literal["stop", "drop"], epoch: int
) -> tuple[dict[str, np.ndarray], int]:
    """The epoch's rewards ("reward" = weighted total, and each component) and how many images have no finite
    total. policy "stop": InvalidScores naming them; "drop": their rewards stay NaN (the loop leaves them out of
    the advantages) and a warning counts them."""
    local = {"reward": np.concatenate([r.total for r in results])}
    for name in results[0].components:
        local[name] = np.concatenate([r.components[name] for r in results])
    bad = invalid_items(results)
    if bad and policy == "stop":
        shown = "\n  ".join(bad[:10]) + (f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise InvalidScores(
            f"epoch {epoch}: {len(bad)} of {len(local['reward'])} images have no finite reward "
            f"(reward.on_invalid_score = stop; set it to drop to leave them out and go on):\n  {shown}"
        )
    if bad:
        log.warning("epoch %d: dropped %d sample(s) without a finite reward: %s", epoch, len(bad), "; ".join(bad[:3]))
    return local, len(bad)


def finite_advantages(
    update: Callable[[list[str], np.ndarray], np.ndarray], prompts: list[str], rewards: np.ndarray
) -> np.ndarray:
    """Advantages of the samples with a finite reward (from `update`, the stat tracker's); 0 for the others, whose
    reward never enters the statistics."""
    keep = np.isfinite(rewards)
    advantages = np.zeros(len(rewards), dtype=np.float64)
    if keep.any():
        advantages[keep] = update([p for p, k in zip(prompts, keep, strict=True) if k], rewards[keep])
    return advantages
