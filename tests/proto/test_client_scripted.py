"""The client's retry policy over real HTTP against scripted peers, for what the real kit cannot be made to do.

A peer answers an exact script of statuses (a 408 or a 500 on cue, N failures then success), a
Retry-After of its choosing, or a 200 whose body breaks the contract (not msgpack, a NaN score, the
wrong item count or request id). Its `/v1/info` is the contract's (proto/README.md §8) and its
answers come from the real codec. Overload (429), loading (503), slow and stalled services and
concurrency are tested against real kit processes: tests/proto/test_client_services.py.
"""

from __future__ import annotations

import asyncio
import json
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from rewardflow_proto import (
    VERSION,
    ErrorBody,
    ScoreRequest,
    ScoreResponse,
    decode_request,
    encode_error,
    encode_response,
)
from rewardflow_proto.client import RetryPolicy, RewardClient, RewardServiceError


def contract_info(max_batch_size: int) -> dict[str, object]:
    """GET /v1/info exactly as proto/README.md §8 lists it, for a service with score keys value and other."""
    return {
        "name": "fake",
        "version": "0.0.1",
        "model": "",
        "device": "cpu",
        "score_keys": ["value", "other"],
        "score_range": {"value": [None, None], "other": [None, None]},
        "max_batch_size": max_batch_size,
        "max_body_bytes": 64 * 1024 * 1024,
        "body_timeout_s": 30.0,
        "max_inflight_bodies": 64,
        "max_prompt_chars": 10_000,
        "max_image_pixels": 4096 * 4096,
        "max_request_pixels": 2**26,
        "max_batch_pixels": 2**26,
        "working_size": None,
        "answer_cache_size": 4096,
        "answer_cache_ttl_s": 600.0,
        "contract_version": VERSION,
    }


# 200 answers that break the contract: (name, what the body is made of).
MALFORMED = ("not_msgpack", "nan_score", "wrong_count", "wrong_id")


class ScriptedPeer:
    """Answers POST /v1/score with the next entry of `script` (200 once the script is used up): an HTTP status
    with headers, or (200, {"malformed": kind}) for a 200 whose body breaks the contract as MALFORMED names."""

    def __init__(self, max_batch_size: int = 64) -> None:
        self.info = contract_info(max_batch_size)
        self.script: list[tuple[int, dict[str, str]]] = []
        self.score_hits: list[float] = []
        self.answered: list[float] = []  # when each scripted non-200 answer had been written
        self.request_ids: list[str] = []
        self.batch_sizes: list[int] = []
        self.info_hits = 0
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
                status, headers = peer.script.pop(0) if peer.script else (200, {})
                request = decode_request(body)
                peer.request_ids.append(request.id)
                if status != 200:
                    error = ErrorBody(code="x", message=f"scripted {status}")
                    self._send(status, encode_error(error), "application/msgpack", headers)
                    peer.answered.append(time.monotonic())
                    return
                peer.batch_sizes.append(len(request))
                self._send(200, answer(request, headers.get("malformed")), "application/msgpack", {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, address: None  # a client that timed out closed its socket
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def answer(request: ScoreRequest, malformed: str | None) -> bytes:
    """The 200 body for `request`: scores 0, 1, 2, ... per chunk, or one broken as `malformed` says."""
    if malformed == "not_msgpack":
        return b"\xc1 garbage"
    n = len(request) + (1 if malformed == "wrong_count" else 0)
    values = [float(i) for i in range(n)]
    request_id = "someone-else" if malformed == "wrong_id" else request.id
    body = encode_response(ScoreResponse(scores={"value": values, "other": values}, errors=[None] * n, id=request_id))
    if malformed == "nan_score":  # the codec refuses to write NaN: patch the float64 of the first 0.0 in place
        zero = b"\xcb" + struct.pack(">d", 0.0)
        body = body.replace(zero, b"\xcb" + struct.pack(">d", float("nan")), 1)
        assert body != encode_response(ScoreResponse(scores={"value": values, "other": values}, errors=[None] * n))
    return body


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
    # An order, not a speed: the retry cannot arrive before Retry-After has passed since the 429 was written
    # (a client that ignores it retries after at most FAST.cap_s = 0.05 s); a slow machine only widens the gap.
    assert peer.score_hits[1] - peer.answered[0] >= 1.0 - 0.01
    assert peer.request_ids[0] == peer.request_ids[1] != ""  # the retry is the same request: the same id


def test_retries_are_bounded_and_the_error_names_the_last_failure(peer: ScriptedPeer) -> None:
    peer.script = [(503, {})] * 10
    with pytest.raises(RewardServiceError, match=r"reward fake \(service 'fake'\).*4 attempts.*HTTP 503"):
        asyncio.run(_score(peer))
    assert len(peer.score_hits) == 4


def test_api_key_travels_as_bearer_token(peer: ScriptedPeer) -> None:
    seen: list[str | None] = []
    original = peer.server.RequestHandlerClass.do_POST

    def spy(handler: BaseHTTPRequestHandler) -> None:
        seen.append(handler.headers.get("Authorization"))
        original(handler)

    peer.server.RequestHandlerClass.do_POST = spy  # type: ignore[method-assign]
    asyncio.run(_score(peer, api_key="s3cret"))
    assert seen == ["Bearer s3cret"]


def test_a_service_is_called_once_for_several_reward_names(peer: ScriptedPeer) -> None:
    async def run() -> object:
        async with RewardClient({"fake": [peer.url]}, {"fake": 1.0, "fake_value": 2.0, "fake_other": -1.0}) as c:
            return await c.score(IMAGES, "p")

    result = asyncio.run(run())
    assert len(peer.score_hits) == 1 and peer.info_hits == 1
    np.testing.assert_array_equal(result.components["fake"], [0.0, 1.0, 2.0])
    np.testing.assert_array_equal(result.total, [0.0, 2.0, 4.0])  # 1·v + 2·v − 1·v


def test_info_is_fetched_once_per_service(peer: ScriptedPeer) -> None:
    async def run() -> None:
        async with RewardClient({"fake": [peer.url]}) as client:
            await asyncio.gather(*(client.score(IMAGES, "p") for _ in range(5)))

    asyncio.run(run())
    assert peer.info_hits == 1 and len(peer.score_hits) == 5


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_answer_is_retried_with_the_same_id_and_never_used(peer: ScriptedPeer, kind: str) -> None:
    peer.script = [(200, {"malformed": kind})]
    np.testing.assert_array_equal(asyncio.run(_score(peer)), [0.0, 1.0, 2.0])
    assert len(peer.score_hits) == 2 and peer.request_ids[0] == peer.request_ids[1]


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_answers_until_the_end_stop_with_the_reward_url_images_and_cause(
    peer: ScriptedPeer, kind: str
) -> None:
    peer.script = [(200, {"malformed": kind})] * 10
    with pytest.raises(RewardServiceError) as info:
        asyncio.run(_score(peer))
    message = str(info.value)
    assert "reward fake" in message and peer.url in message and "images 0..2" in message
    assert "malformed body" in message and info.value.images == (0, 3)
    assert len(peer.score_hits) == 4
