"""The client's retry policy and concurrency over real HTTP against scripted peers.

A peer is a stand-in for a misbehaving or slow service (overloaded, not ready, rejecting, known
latency), which the real kit cannot be made to be on cue; the contract bytes it sends come from the
real codec.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from rewardflow_proto import ErrorBody, ScoreResponse, decode_request, encode_error, encode_response
from rewardflow_proto.client import RetryPolicy, RewardClient, RewardServiceError


class ScriptedPeer:
    """Answers POST /v1/score with the next status of `script` (200 once the script is used up)."""

    def __init__(self, max_batch_size: int = 64) -> None:
        self.info = {"name": "fake", "score_keys": ["value", "other"], "max_batch_size": max_batch_size}
        self.script: list[tuple[int, dict[str, str]]] = []
        self.score_hits: list[float] = []
        self.batch_sizes: list[int] = []
        self.info_hits = 0
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
                peer.info_hits += 1
                self._send(200, json.dumps(peer.info).encode(), "application/json", {})

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
                peer.batch_sizes.append(len(request))
                values = [float(i) for i in range(len(request))]
                response = ScoreResponse(scores={"value": values, "other": values}, errors=[None] * len(values))
                self._send(200, encode_response(response), "application/msgpack", {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that timed out closed its socket
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def peers() -> Iterator[Callable[..., ScriptedPeer]]:
    started: list[ScriptedPeer] = []

    def start(max_batch_size: int = 64) -> ScriptedPeer:
        p = ScriptedPeer(max_batch_size)
        threading.Thread(target=p.server.serve_forever, args=(0.02,), daemon=True).start()
        started.append(p)
        return p

    yield start
    for p in started:
        p.server.shutdown()
        p.server.server_close()


@pytest.fixture
def peer(peers: Callable[..., ScriptedPeer]) -> ScriptedPeer:
    return peers()


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


def test_every_service_is_called_at_the_same_time(peers: Callable[..., ScriptedPeer]) -> None:
    slow = [peers() for _ in range(3)]
    for p in slow:
        p.delay_s = 0.5
    endpoints = {name: [p.url] for name, p in zip(("a", "b", "c"), slow, strict=True)}

    async def run() -> float:
        async with RewardClient(endpoints, retry=FAST) as client:
            await client.resolve()  # /v1/info out of the timing
            start = time.monotonic()
            await client.score(IMAGES, "p")
            return time.monotonic() - start

    elapsed = asyncio.run(run())
    assert all(len(p.score_hits) == 1 for p in slow)
    assert elapsed < 1.0, f"three 0.5 s services took {elapsed:.2f} s: called one after another?"
    hits = sorted(h for p in slow for h in p.score_hits)
    assert hits[-1] - hits[0] < 0.2


def test_a_service_is_called_once_for_several_reward_names(peer: ScriptedPeer) -> None:
    async def run() -> object:
        async with RewardClient({"fake": [peer.url]}, {"fake": 1.0, "fake_value": 2.0, "fake_other": -1.0}) as c:
            return await c.score(IMAGES, "p")

    result = asyncio.run(run())
    assert len(peer.score_hits) == 1 and peer.info_hits == 1
    np.testing.assert_array_equal(result.components["fake"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(result.total, [0.0, 2.0, 4.0])  # 1·v + 2·v − 1·v


def test_chunks_are_sent_concurrently_and_spread_over_replicas(peers: Callable[..., ScriptedPeer]) -> None:
    replicas = [peers(max_batch_size=2), peers(max_batch_size=2)]
    for p in replicas:
        p.delay_s = 0.5
    images = np.zeros((8, 4, 4, 3), np.uint8)

    async def run() -> tuple[float, np.ndarray]:
        async with RewardClient({"fake": [p.url for p in replicas]}, retry=FAST) as client:
            await client.resolve()
            start = time.monotonic()
            result = await client.score(images, "p")
            return time.monotonic() - start, result.total

    elapsed, total = asyncio.run(run())
    assert [len(p.batch_sizes) for p in replicas] == [2, 2]  # 4 chunks of 2, round robin
    assert all(b == 2 for p in replicas for b in p.batch_sizes)
    np.testing.assert_array_equal(total, [0, 1] * 4)  # each chunk's items in place, in order
    assert elapsed < 1.2, f"4 chunks of 0.5 s took {elapsed:.2f} s: sent one after another?"


def test_info_is_fetched_once_per_service(peer: ScriptedPeer) -> None:
    async def run() -> None:
        async with RewardClient({"fake": [peer.url]}) as client:
            await asyncio.gather(*(client.score(IMAGES, "p") for _ in range(5)))

    asyncio.run(run())
    assert peer.info_hits == 1 and len(peer.score_hits) == 5
