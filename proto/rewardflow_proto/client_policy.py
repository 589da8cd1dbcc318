"""The client's pure policies: retry backoff, Retry-After, reward-name resolution, chunking, weighting."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rewardflow_proto.names import close_matches, did_you_mean

RETRYABLE_STATUS = frozenset({408, 429, 503})
"""Statuses that are safe to retry: the request was not (or not fully) processed."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter (AWS architecture blog, 2015)."""

    max_retries: int = 4
    base_s: float = 0.05
    cap_s: float = 2.0
    max_retry_after_s: float = 30.0

    def backoff_s(self, retry: int, rng: random.Random) -> float:
        """Sleep before retry number `retry` (0-based): uniform in [0, min(cap, base * 2**retry)]."""
        return rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0**retry))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def resolve_reward(name: str, score_keys: dict[str, Sequence[str]]) -> tuple[str, str]:
    """Reward name → (service, score key): `<service>` is its primary key, `<service>_<key>` that key."""
    if score_keys.get(name):
        return name, score_keys[name][0]
    for service in sorted(score_keys, key=len, reverse=True):
        key = name[len(service) + 1 :]
        if name.startswith(service + "_") and key in score_keys[service]:
            return service, key
    valid = [n for s, keys in score_keys.items() for n in (s, *(f"{s}_{k}" for k in keys))]
    raise ValueError(did_you_mean(name, valid, "reward"))


def service_of(name: str, services: Sequence[str]) -> str:
    """The service a reward name belongs to, before its score keys are known (longest prefix wins)."""
    for service in sorted(services, key=len, reverse=True):
        if name == service or name.startswith(service + "_"):
            return service
    raise ValueError(
        f"reward {name!r} names no configured service: "
        + did_you_mean(name, services, "service", reward_service_suggestions(name, services))
    )


def reward_service_suggestions(name: str, services: Sequence[str]) -> list[str]:
    """Services a mistyped reward name may have meant: close to the whole name, or to its part before '_'."""
    return close_matches(name, services) or close_matches(name.split("_", 1)[0], services)


def plan_chunks(
    item_bytes: Sequence[int], max_items: int, max_bytes: int | None = None, groups: Sequence[Any] | None = None
) -> list[tuple[int, int]]:
    """Split items into consecutive [start, stop) chunks of at most max_items and (if given) max_bytes.

    With `groups`, a chunk ends at the last change of group id inside it where there is one, so a
    group-aware reward sees whole groups (groups must be contiguous and fit in one chunk for that).
    """
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, got {max_items}")
    chunks: list[tuple[int, int]] = []
    n, start = len(item_bytes), 0
    while start < n:
        stop, size = start + 1, item_bytes[start]
        while stop < n and stop - start < max_items and (max_bytes is None or size + item_bytes[stop] <= max_bytes):
            size += item_bytes[stop]
            stop += 1
        if stop < n and groups is not None:
            stop = next((j for j in range(stop, start, -1) if groups[j] != groups[j - 1]), stop)
        chunks.append((start, stop))
        start = stop
    return chunks


def weighted_total(components: dict[str, np.ndarray], weights: dict[str, float], n: int) -> np.ndarray:
    """Σ weight·component per item; NaN where a component with a non-zero weight is NaN."""
    total = np.zeros(n, dtype=np.float64)
    for name, weight in weights.items():
        if weight != 0.0:
            total += weight * components[name]
    return total
