"""Fault injection for tests and the fault harness (bench/faults.py): off unless REWARDFLOW_FAULT_FILE is set.

REWARDFLOW_FAULT_FILE names a JSON file that the service re-reads whenever it changes, so a harness can
make a running replica misbehave and recover without restarting it. Keys (all optional; `{}` = no fault):

| key | effect on POST /v1/score |
|---|---|
| `sleep_s` | every request waits this long before it is handled (a slow service) |
| `hold_file` | every request waits until this file exists, at most `hold_max_s` (600) seconds (a stall) |
| `status` | answer this HTTP status (429, 503, ...) with the contract's error body and Retry-After; nothing scored |
| `malformed` | true: answer 200 with a body that is not msgpack; nothing scored |
| `nonfinite` | true: answer 200 where every item is a `non_finite` item error; nothing scored |
| `every` | `status`/`malformed`/`nonfinite` hit every Nth request only (default 1: all of them) |
| `count` | at most this many requests are hit in all (default: no limit) |

Hit requests are counted in `rewardflow_faults_injected_total{kind}`; the images the model did score stay
in `rewardflow_images_scored_total`, so a harness can check that every image was scored exactly once.
Not a ServiceSettings field: a production deployment never sets it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter
from rewardflow_proto import (
    ERROR_STATUS,
    ErrorBody,
    ItemError,
    ScoreResponse,
    decode_request,
    encode_error,
    encode_response,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rewardflow_kit.metrics import ServiceMetrics

FAULT_ENV = "REWARDFLOW_FAULT_FILE"
MALFORMED_BODY = b"\xc1 this is not msgpack"  # 0xc1 is the one byte msgpack never uses
log = logging.getLogger("rewardflow_kit")


@dataclass(frozen=True)
class FaultPlan:
    """What the fault file asks for (see the module docstring)."""

    sleep_s: float = 0.0
    hold_file: str | None = None
    hold_max_s: float = 600.0
    status: int | None = None
    malformed: bool = False
    nonfinite: bool = False
    every: int = 1
    count: int | None = None

    @property
    def answer_kind(self) -> str | None:
        """Which answer replaces scoring on a hit request ('status', 'malformed', 'nonfinite'), or None."""
        if self.status is not None:
            return "status"
        return "malformed" if self.malformed else "nonfinite" if self.nonfinite else None


def read_plan(path: Path) -> FaultPlan:
    """The plan in `path` (no faults when it does not exist); ValueError naming the key for a bad file."""
    if not path.exists():
        return FaultPlan()
    raw = json.loads(path.read_text() or "{}")
    known = sorted(FaultPlan.__dataclass_fields__)
    if unknown := set(raw) - set(known):
        raise ValueError(f"{path}: unknown fault keys {sorted(unknown)}; known: {known}")
    plan = FaultPlan(**raw)
    if plan.every < 1:
        raise ValueError(f"{path}: every = {plan.every}, expected >= 1")
    return plan


class FaultInjection:
    """ASGI middleware (inside the request metrics, so injected answers are counted by status like any other)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, path: str, score_keys: tuple[str, ...]) -> None:
        self.app = app
        self.score_keys = score_keys
        self.path = Path(path)
        self.metrics = metrics
        self.injected = _injected_counter(metrics)
        self._stamp: float | None = None
        self._plan = FaultPlan()
        self._seen = 0
        self._hits = 0

    def plan(self) -> FaultPlan:
        """The current plan, re-read when the file's modification time changes; a bad file means no faults."""
        try:
            stamp = self.path.stat().st_mtime_ns if self.path.exists() else None
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._plan, self._seen, self._hits = read_plan(self.path), 0, 0
            except (ValueError, TypeError) as exc:
                log.error("fault file %s ignored: %s", self.path, exc)
                self._plan = FaultPlan()
        return self._plan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/score" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        plan = self.plan()
        await self._delay(plan)
        kind = self._hit(plan)
        if kind is None:
            await self.app(scope, receive, send)
            return
        self.injected.labels(self.metrics.service, kind).inc()
        body = await _read_body(receive)
        await _answer(send, *_fault_answer(plan, kind, body, self.score_keys))

    async def _delay(self, plan: FaultPlan) -> None:
        if plan.sleep_s > 0:
            await asyncio.sleep(plan.sleep_s)
        if plan.hold_file:
            deadline = time.monotonic() + plan.hold_max_s
            while not os.path.exists(plan.hold_file) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)

    def _hit(self, plan: FaultPlan) -> str | None:
        kind = plan.answer_kind
        if kind is None:
            return None
        self._seen += 1
        if self._seen % plan.every or (plan.count is not None and self._hits >= plan.count):
            return None
        self._hits += 1
        return kind


def _injected_counter(metrics: ServiceMetrics) -> Counter:
    """The app's fault counter (one per registry: Starlette may build its middleware stack more than once)."""
    existing = getattr(metrics, "faults_injected", None)
    if existing is None:
        existing = metrics.faults_injected = Counter(  # type: ignore[attr-defined]
            "rewardflow_faults_injected",
            "Score requests answered by injected faults (REWARDFLOW_FAULT_FILE), by kind.",
            ("service", "kind"),
            registry=metrics.registry,
        )
    return existing


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _fault_answer(
    plan: FaultPlan, kind: str, body: bytes, score_keys: tuple[str, ...]
) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of an injected answer."""
    if kind == "status":
        status = int(plan.status or 503)
        code = next((c for c, s in ERROR_STATUS.items() if s == status), "internal")
        error = ErrorBody(code=code, message=f"injected fault: HTTP {status} ({FAULT_ENV})")
        return status, encode_error(error), {"Retry-After": "1"}
    if kind == "malformed":
        return 200, MALFORMED_BODY, {}
    n = len(decode_request(body))
    error = ItemError("non_finite", "injected fault: the model produced NaN for this item")
    response = ScoreResponse(scores={k: [None] * n for k in score_keys}, errors=[error] * n, service="injected")
    return 200, encode_response(response), {}


async def _answer(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/msgpack"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    start: Message = {"type": "http.response.start", "status": status, "headers": raw}
    await send(start)
    await send({"type": "http.response.body", "body": body})


def fault_file() -> str | None:
    """$REWARDFLOW_FAULT_FILE, or None: fault injection is off."""
    return os.environ.get(FAULT_ENV) or None
