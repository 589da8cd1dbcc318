"""Idempotent retries: recent answers kept by request id, so that a retried request is answered, not scored again.

A client retries a request whose answer it did not get (a timeout that fired while the model ran, an answer
lost on the way) with the same id and the same body. The first attempt may well have been scored; scoring
the retry again would count its images twice. So a request with a non-empty id is remembered with a hash
of its body: a repeat with the same body gets the first's answer (waiting for it while the first is still
being scored), a repeat with another body is refused (422 naming the id), an empty id is never remembered.
Only answers are remembered: a request that failed whole (429, a cancelled handler) leaves nothing behind,
so its retry is scored.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from rewardflow_proto import ContractError

from rewardflow_kit.scoring import encodable

DIGEST_BYTES = 16


def body_digest(body: bytes | memoryview) -> bytes:
    """A hash of a request's body, the bytes as sent (a retry resends the same bytes)."""
    return hashlib.blake2b(body, digest_size=DIGEST_BYTES).digest()


@dataclass
class _Answer:
    digest: bytes
    value: Any
    expires: float


@dataclass
class _InFlight:
    digest: bytes
    done: asyncio.Event = field(default_factory=asyncio.Event)
    value: Any = None
    answered: bool = False


class RecentAnswers:
    """At most `max_entries` answers, each for `ttl_s` seconds, keyed by request id with a hash of the body.

    `on_hit` is called for every request answered with another's result: at once for a cached answer, when it
    starts to wait for one in flight.
    """

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        on_hit: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._on_hit = on_hit
        self._clock = clock
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._in_flight: dict[str, _InFlight] = {}

    def remembers(self, request_id: str) -> bool:
        """Whether a request with this id takes part (a non-empty id, the cache switched on)."""
        return bool(request_id) and self.max_entries > 0

    async def answer(self, request_id: str, digest: bytes, compute: Callable[[], Awaitable[Any]]) -> Any:
        """The answer to a request: a remembered one, the one in flight for the same id, or `compute()`'s."""
        if not self.remembers(request_id):
            return await compute()
        while True:
            self._expire()
            cached = self._answers.get(request_id)
            if cached is not None:
                self._check(request_id, cached.digest, digest)
                self._on_hit()
                return cached.value
            first = self._in_flight.get(request_id)
            if first is None:
                return await self._compute(request_id, digest, compute)
            self._check(request_id, first.digest, digest)
            self._on_hit()  # counted now, so that a duplicate waiting for the first shows
            await first.done.wait()
            if first.answered:
                return first.value
            # The first attempt failed whole (429, cancelled): nothing was scored, so this one goes ahead.

    async def _compute(self, key: str, digest: bytes, compute: Callable[[], Awaitable[Any]]) -> Any:
        first = self._in_flight[key] = _InFlight(digest)
        try:
            first.value = await compute()
            first.answered = True
            self._remember(key, digest, first.value)
            return first.value
        finally:
            del self._in_flight[key]
            first.done.set()

    def _remember(self, key: str, digest: bytes, value: Any) -> None:
        self._answers[key] = _Answer(digest, value, self._clock() + self.ttl_s)
        self._answers.move_to_end(key)
        while len(self._answers) > self.max_entries:
            self._answers.popitem(last=False)

    def _expire(self) -> None:
        # Answers are kept in the order they were given, so the expired ones are at the front.
        now = self._clock()
        while self._answers and next(iter(self._answers.values())).expires <= now:
            self._answers.popitem(last=False)

    def _check(self, request_id: str, remembered: bytes, digest: bytes) -> None:
        if remembered != digest:
            raise ContractError(
                "invalid_request",
                f"request id {encodable(request_id)!r} was already used for another body in the last {self.ttl_s:g} s "
                "(answer_cache_ttl_s); a retry must resend the same body, and a new request needs a new id",
                "id",
            )
