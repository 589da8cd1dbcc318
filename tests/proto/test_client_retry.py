"""The client's retry policy over real HTTP against a scripted peer that answers chosen status codes.

The peer is a stand-in for a misbehaving service (overloaded, not ready, rejecting), which the real
kit cannot be made to do on cue; the contract bytes it sends come from the real codec.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from rewardflow_proto import ErrorBody, ScoreResponse, decode_request, encode_error, encode_response
from rewardflow_proto.client import RetryPolicy, RewardClient, RewardServiceError

INFO = {"name": "fake", "score_keys": ["value"], "max_batch_size": 64}


class ScriptedPeer:
    """Answers POST /v1/score with the next status of `script` (200 once the script is used up)."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.score_hits: list[float] = []
        self.delay_s = 0.0
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._send(200, json.dumps(INFO).encode(), "application/json", {})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                peer.score_hits.append(time.monotonic())
                time.sleep(peer.delay_s)
                status, headers = peer.script.pop(0) if peer.script else (200, {})
                if status != 200:
                    error = ErrorBody(code="x", message=f"scripted {status}")
                    self._send(status, encode_error(error), "application/msgpack", headers)
                    return
                request = decode_request(body)
                values = [float(i) for i in range(len(request))]
                response = ScoreResponse(scores={"value": values}, errors=[None] * len(values))
                self._send(200, encode_response(response), "application/msgpack", {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that timed out closed its socket
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def peer() -> Iterator[ScriptedPeer]:
    p = ScriptedPeer()
    thread = threading.Thread(target=p.server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield p
    p.server.shutdown()
    p.server.server_close()


FAST = RetryPolicy(max_retries=3, base_s=0.01, cap_s=0.05)
IMAGES = np.zeros((3, 8, 8, 3), np.uint8)


async def _score(peer: ScriptedPeer, **kwargs: object) -> np.ndarray:
    async with RewardClient({"fake": [peer.url]}, retry=kwargs.pop("retry", FAST), **kwargs) as client:
        return (await client.score(IMAGES, "p")).total


@pytest.mark.parametrize("status", [408, 429, 503])
def test_retryable_status_is_retried_until_success(peer: ScriptedPeer, status: int) -> None:
    peer.script = [(status, {}), (status, {})]
    total = asyncio.run(_score(peer))
    np.testing.assert_array_equal(total, [0.0, 1.0, 2.0])
    assert len(peer.score_hits) == 3


@pytest.mark.parametrize("status", [400, 401, 413, 422, 500])
def test_other_errors_raise_at_once_with_the_server_message(peer: ScriptedPeer, status: int) -> None:
    peer.script = [(status, {})]
    with pytest.raises(RewardServiceError) as info:
        asyncio.run(_score(peer))
    assert len(peer.score_hits) == 1
    assert info.value.status == status
    assert f"scripted {status}" in str(info.value)
    assert "fake" in str(info.value) and peer.url in str(info.value)


def test_retry_after_is_honoured(peer: ScriptedPeer) -> None:
    peer.script = [(429, {"Retry-After": "1"})]
    asyncio.run(_score(peer))
    assert len(peer.score_hits) == 2
    assert peer.score_hits[1] - peer.score_hits[0] >= 0.95


def test_retries_are_bounded_and_the_error_names_the_last_failure(peer: ScriptedPeer) -> None:
    peer.script = [(503, {})] * 10
    with pytest.raises(RewardServiceError, match=r"reward fake \(service 'fake'\).*4 attempts.*HTTP 503"):
        asyncio.run(_score(peer))
    assert len(peer.score_hits) == 4


def test_request_timeout_is_retried_then_reported(peer: ScriptedPeer) -> None:
    peer.delay_s = 0.5
    start = time.monotonic()
    with pytest.raises(RewardServiceError, match="ReadTimeout"):
        asyncio.run(_score(peer, timeout_s=0.1, retry=RetryPolicy(max_retries=1, base_s=0.01)))
    assert len(peer.score_hits) == 2
    assert time.monotonic() - start < 1.5


def test_api_key_travels_as_bearer_token(peer: ScriptedPeer) -> None:
    seen: list[str | None] = []
    original = peer.server.RequestHandlerClass.do_POST

    def spy(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Authorization"))
        original(handler)

    peer.server.RequestHandlerClass.do_POST = spy  # type: ignore[method-assign]
    asyncio.run(_score(peer, api_key="s3cret"))
    assert seen == ["Bearer s3cret"]
