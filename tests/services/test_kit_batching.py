"""Micro-batching across concurrent requests, requests kept whole, and 429 when the queue is full."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rewardflow_proto import ScoreRequest, decode_response, encode_request
from service_calls import MSGPACK, error_of, random_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from fault_env import scorer_env

READY_S = 300.0  # a hang guard for a service coming up on a busy 2-core machine, not a speed


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
    # The first request waits up to 10 minutes for others to fill the batch of 8, so the 8 requests meet in one
    # model call however slowly they arrive; a batcher that does not merge takes 8 calls (or 8 delays).
    service = service_process(
        "scorers:ProbeScorer",
        env={"REWARDFLOW_MAX_QUEUE_DELAY_MS": "600000", "REWARDFLOW_MAX_BATCH_SIZE": "8"},
    )
    before = histogram(httpx.get(service.url + "/metrics").text, "rewardflow_batch_size")
    bodies = [encode_request(ScoreRequest(images=random_images(1, seed=i), prompts=["p"])) for i in range(8)]
    replies = asyncio.run(post_all(service.url, bodies))
    assert [r.status_code for r in replies] == [200] * 8
    count, total = histogram(httpx.get(service.url + "/metrics").text, "rewardflow_batch_size")
    batches, images = count - before[0], total - before[1]
    assert (batches, images) == (1, 8), f"8 one-image requests took {batches} model calls"
    details = [decode_response(r.content).details[0] for r in replies]  # type: ignore[index]
    assert {d["batch_size"] for d in details} == {8} and len({d["batch_id"] for d in details}) == 1
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


def metric(url: str, name: str) -> float:
    """One sample of the service's /metrics (0 when absent)."""
    found = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", httpx.get(url + "/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def until(condition: Callable[[], bool], deadline_s: float = 60.0) -> None:
    """Poll until `condition` holds (the deadline is a hang guard, not a speed)."""
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, "the service never reached the state this test waits for"
        time.sleep(0.02)


@pytest.mark.slow
def test_full_queue_answers_429_with_retry_after(service_process: Callable, tmp_path: Path) -> None:
    # The gate holds the model: one request in the model call, two queued (max_queue_size 2), then every
    # other request must be refused, whatever the timing, until the gate opens.
    gate = tmp_path / "gate"
    env = scorer_env(
        TEST_GATE_FILE=str(gate),
        REWARDFLOW_MAX_BATCH_SIZE="1",
        REWARDFLOW_MAX_QUEUE_SIZE="2",
        REWARDFLOW_MAX_QUEUE_DELAY_MS="0",
    )
    service = service_process("fault_scorers:GateScorer", env=env, timeout_s=READY_S)
    bodies = [encode_request(ScoreRequest(images=random_images(1, seed=i), prompts=["p"])) for i in range(10)]

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=10)) as client:
            post = lambda b: client.post(service.url + "/v1/score", content=b, headers={"content-type": MSGPACK})  # noqa: E731
            first = asyncio.ensure_future(post(bodies[0]))
            await asyncio.to_thread(until, lambda: metric(service.url, "rewardflow_batch_size_count") == 1)
            queued = [asyncio.ensure_future(post(b)) for b in bodies[1:3]]
            await asyncio.to_thread(until, lambda: metric(service.url, "rewardflow_queue_depth") == 2)
            refused = await asyncio.gather(*(post(b) for b in bodies[3:]))
            gate.touch()
            return [await first, *(await asyncio.gather(*queued)), *refused]

    replies = asyncio.run(run())
    assert [r.status_code for r in replies] == [200] * 3 + [429] * 7
    for reply in replies[3:]:
        assert int(reply.headers["retry-after"]) >= 1
        error = error_of(reply)
        assert error["code"] == "overloaded" and "max_queue_size" in error["message"]
    assert httpx.get(service.url + "/readyz").status_code == 200
