"""Micro-batching across concurrent requests, requests kept whole, and 429 when the queue is full."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from rewardflow_proto import ScoreRequest, decode_response, encode_request
from service_calls import MSGPACK, error_of, random_images


def histogram(metrics_text: str, name: str) -> tuple[float, float]:
    """(count, sum) of a histogram in Prometheus text."""
    values = {}
    for line in metrics_text.splitlines():
        for suffix in ("_count", "_sum"):
            if line.startswith(f"{name}{suffix}{{"):
                values[suffix] = float(line.split()[-1])
    return values["_count"], values["_sum"]


async def post_all(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    """All bodies at once, each on its own connection (as concurrent clients would)."""
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(
            *(client.post(url + "/v1/score", content=b, headers={"content-type": MSGPACK}) for b in bodies)
        )


@pytest.mark.slow
def test_concurrent_single_image_requests_are_merged_into_batches(service_process: Callable) -> None:
    service = service_process(
        "scorers:ProbeScorer",
        env={"TEST_SCORE_SLEEP_S": "0.2", "REWARDFLOW_MAX_QUEUE_DELAY_MS": "100", "REWARDFLOW_MAX_BATCH_SIZE": "8"},
    )
    before = histogram(httpx.get(service.url + "/metrics").text, "rewardflow_batch_size")
    bodies = [encode_request(ScoreRequest(images=random_images(1, seed=i), prompts=["p"])) for i in range(8)]
    replies = asyncio.run(post_all(service.url, bodies))
    assert [r.status_code for r in replies] == [200] * 8
    count, total = histogram(httpx.get(service.url + "/metrics").text, "rewardflow_batch_size")
    batches, images = count - before[0], total - before[1]
    assert images == 8
    assert batches < 8, f"8 one-image requests took {batches} model calls: nothing was batched"
    sizes = [decode_response(r.content).details[0]["batch_size"] for r in replies]  # type: ignore[index]
    assert max(sizes) > 1
    queue_ms = [decode_response(r.content).timing["queue_ms"] for r in replies]
    assert max(queue_ms) > 0


@pytest.mark.slow
def test_a_request_is_never_split_across_batches(service_process: Callable) -> None:
    service = service_process(
        "scorers:ProbeScorer",
        env={"TEST_SCORE_SLEEP_S": "0.1", "REWARDFLOW_MAX_QUEUE_DELAY_MS": "50", "REWARDFLOW_MAX_BATCH_SIZE": "4"},
    )
    bodies = [
        encode_request(ScoreRequest(images=random_images(3, seed=i), prompts=["p"] * 3, group_ids=[i] * 3))
        for i in range(6)
    ]
    replies = asyncio.run(post_all(service.url, bodies))
    for reply in replies:
        details = decode_response(reply.content).details
        assert details is not None
        assert len({d["batch_id"] for d in details}) == 1, "one request's items went to different model calls"
        assert all(d["batch_size"] <= 4 for d in details)


@pytest.mark.slow
def test_full_queue_answers_429_with_retry_after(service_process: Callable) -> None:
    service = service_process(
        "scorers:ProbeScorer",
        env={
            "TEST_SCORE_SLEEP_S": "0.5",
            "REWARDFLOW_MAX_BATCH_SIZE": "1",
            "REWARDFLOW_MAX_QUEUE_SIZE": "2",
            "REWARDFLOW_MAX_QUEUE_DELAY_MS": "0",
        },
    )
    bodies = [encode_request(ScoreRequest(images=random_images(1, seed=i), prompts=["p"])) for i in range(10)]
    replies = asyncio.run(post_all(service.url, bodies))
    codes = sorted(r.status_code for r in replies)
    assert codes.count(200) >= 2 and codes.count(429) >= 1, codes  # 2 queued (+1 if already computing)
    assert set(codes) <= {200, 429}
    for reply in replies:
        if reply.status_code == 429:
            assert int(reply.headers["retry-after"]) >= 1
            error = error_of(reply)
            assert error["code"] == "overloaded" and "max_queue_size" in error["message"]
    assert httpx.get(service.url + "/readyz").status_code == 200
