"""Receiving a request body: bounded in size, time and concurrency; memory grows with the bytes that arrive.

Nothing is reserved from the declared Content-Length (a client that declares 64 MiB and sends one byte holds one
byte), the whole body must arrive within `body_timeout_s` (else 408 `request_timeout` and the connection is
closed), at most `max_inflight_bodies` bodies are received at once (beyond: 429 `overloaded`), and a client that
disconnects mid-upload is answered nothing and counted as 499 (nginx's "client closed request"), never a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import Request
from rewardflow_proto import ContractError
from starlette.requests import ClientDisconnect

CLIENT_CLOSED_REQUEST = 499
"""The status a request is counted under (metrics, logs) when its client went away before the answer."""


class ClientGone(Exception):
    """The client closed the connection before its body had arrived; there is nobody to answer."""


class BodyGate:
    """Counts the bodies being received; one beyond `limit` is refused before any of it is read."""

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = limit
        self.active = 0
        self._on_change = on_change or (lambda active: None)

    @contextmanager
    def receiving(self) -> Iterator[None]:
        """Hold one of the `limit` places while a body is received; raises ContractError("overloaded") if none."""
        if self.active >= self.limit:
            raise ContractError(
                "overloaded",
                f"the service is already receiving {self.active} request bodies, its max_inflight_bodies "
                f"of {self.limit}; retry later",
            )
        self.active += 1
        self._on_change(self.active)
        try:
            yield
        finally:
            self.active -= 1
            self._on_change(self.active)


def declared_length(request: Request, limit: int) -> int | None:
    """The Content-Length, or None for a chunked body; 400 if it is not a number, 413 if it exceeds `limit`."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    try:
        expected = int(declared)
    except ValueError:
        raise ContractError("bad_body", f"Content-Length {declared!r} is not an integer") from None
    if expected > limit:
        raise ContractError(
            "too_large", f"request body of {expected} bytes exceeds max_body_bytes of {limit} bytes", "body"
        )
    return expected


async def _read(request: Request, expected: int | None, limit: int) -> memoryview:
    # The buffer grows with what arrives (amortized doubling), so a declared size costs nothing until it is sent.
    buffer = bytearray()
    most = limit if expected is None else expected
    async for chunk in request.stream():
        if len(buffer) + len(chunk) > most:
            if expected is None:
                raise ContractError("too_large", f"request body exceeds max_body_bytes of {limit} bytes", "body")
            raise ContractError("bad_body", f"body is longer than its Content-Length of {expected} bytes")
        buffer += chunk
    if expected is not None and len(buffer) != expected:
        raise ContractError("bad_body", f"body ended after {len(buffer)} of its {expected} declared bytes")
    # Read-only: the decoder's raw image arrays are views into this buffer and reach the scorer.
    return memoryview(buffer).toreadonly()


async def receive_body(request: Request, limit: int, timeout_s: float, gate: BodyGate) -> memoryview:
    """The whole body within `timeout_s` (408 after), at most `limit` bytes (413), while `gate` has room (429)."""
    expected = declared_length(request, limit)
    size = "a chunked body" if expected is None else f"a body of {expected} bytes"
    with gate.receiving():
        try:
            return await asyncio.wait_for(_read(request, expected, limit), timeout_s)
        except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
            raise ContractError(
                "request_timeout",
                f"{size} did not arrive in full within this service's body_timeout_s of {timeout_s:g} s",
                "body",
            ) from None
        except ClientDisconnect:
            raise ClientGone(f"the client disconnected while sending {size}") from None
