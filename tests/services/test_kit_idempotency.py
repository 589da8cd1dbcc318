"""Request ids make retries idempotent: a repeated id with the same body is answered, not scored again (also while
the first is still being scored); with another body it is a 422; an empty id is never remembered. Counted on the
service side (/metrics), over real HTTP against a real service whose model a test holds with a gate file."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from rewardflow_kit.idempotency import RecentAnswers, body_digest
from rewardflow_proto import ContractError, ScoreRequest, decode_response, encode_request
from service_calls import MSGPACK, error_of, post, random_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from fault_env import scorer_env

READY_S = 300.0  # a hang guard for a service coming up on a busy 2-core machine, not a speed


def metric(url: str, name: str) -> float:
    """One sample of the service's /metrics (0 when absent)."""
    found = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", httpx.get(url + "/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def until(condition: Callable[[], bool], deadline_s: float = 120.0) -> None:
    """Poll until `condition` holds (the deadline is a hang guard, not a speed)."""
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, "the service never reached the state this test waits for"
        time.sleep(0.02)


class Gated:
    """A GateScorer service: its model calls wait while the gate file is absent (open by default)."""

    def __init__(self, url: str, gate: Path) -> None:
        self.url = url
        self.gate = gate

    def scored(self) -> float:
        return metric(self.url, "rewardflow_images_scored_total")

    def repeated(self) -> float:
        return metric(self.url, "rewardflow_repeated_requests_total")


@pytest.fixture(scope="module")
def service(module_service_process: Callable, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gated]:
    gate = tmp_path_factory.mktemp("gate") / "open"
    gate.touch()
    env = scorer_env(TEST_GATE_FILE=str(gate), REWARDFLOW_MAX_QUEUE_DELAY_MS="0")
    gated = Gated(module_service_process("fault_scorers:GateScorer", env=env, timeout_s=READY_S).url, gate)
    yield gated
    gate.touch()


def body(request_id: str, seed: int, n: int = 3) -> bytes:
    return encode_request(ScoreRequest(images=random_images(n, seed=seed), prompts=["p"] * n, id=request_id))


def test_a_repeated_id_with_the_same_body_is_answered_once_scored(service: Gated) -> None:
    scored, repeated = service.scored(), service.repeated()
    first = post(service.url, body("retry-1", seed=1))
    second = post(service.url, body("retry-1", seed=1))
    assert first.status_code == second.status_code == 200
    assert second.content == first.content  # the first's answer, timings included
    assert decode_response(first.content).id == "retry-1"
    assert service.scored() - scored == 3, "the retry was scored again"
    assert service.repeated() - repeated == 1


def test_an_id_reused_for_another_body_is_refused(service: Gated) -> None:
    assert post(service.url, body("reused-1", seed=2)).status_code == 200
    scored = service.scored()
    reply = post(service.url, body("reused-1", seed=3))
    assert reply.status_code == 422
    error = error_of(reply)
    assert error["code"] == "invalid_request" and error.get("field") == "id"
    assert "'reused-1'" in error["message"] and "another body" in error["message"]
    assert service.scored() == scored


def test_an_empty_id_is_never_remembered(service: Gated) -> None:
    scored, repeated = service.scored(), service.repeated()
    for _ in range(2):
        assert post(service.url, body("", seed=4)).status_code == 200
    assert service.scored() - scored == 6
    assert service.repeated() == repeated


def test_info_lists_the_answer_cache(service: Gated) -> None:
    info = httpx.get(service.url + "/v1/info").json()
    assert (info["answer_cache_size"], info["answer_cache_ttl_s"]) == (4096, 600.0)


def test_duplicates_in_flight_wait_for_the_first_answer(service: Gated) -> None:
    # The gate holds the first request in its model call; three duplicates arrive meanwhile and must wait for
    # its answer: one model call, three images scored, four equal answers.
    service.gate.unlink()
    scored, repeated = service.scored(), service.repeated()
    calls = metric(service.url, "rewardflow_batch_size_count")
    content = body("in-flight-1", seed=5)

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=4)) as client:
            send = lambda: client.post(service.url + "/v1/score", content=content, headers={"content-type": MSGPACK})  # noqa: E731
            first = asyncio.ensure_future(send())
            await asyncio.to_thread(until, lambda: metric(service.url, "rewardflow_batch_size_count") == calls + 1)
            duplicates = [asyncio.ensure_future(send()) for _ in range(3)]
            await asyncio.to_thread(until, lambda: service.repeated() - repeated == 3)  # all three are waiting
            assert metric(service.url, "rewardflow_queue_depth") == 0, "a duplicate was queued for the model"
            service.gate.touch()
            return [await first, *(await asyncio.gather(*duplicates))]

    try:
        replies = asyncio.run(run())
    finally:
        service.gate.touch()
    assert [r.status_code for r in replies] == [200] * 4
    assert all(r.content == replies[0].content for r in replies)
    assert metric(service.url, "rewardflow_batch_size_count") == calls + 1
    assert service.scored() - scored == 3
    assert service.repeated() - repeated == 3


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_answers_expire_after_the_ttl_and_the_oldest_go_first() -> None:
    clock = Clock()
    answers = RecentAnswers(max_entries=2, ttl_s=10.0, clock=clock)
    computed: list[str] = []

    def answer(request_id: str) -> str:
        async def compute() -> str:
            computed.append(request_id)
            return f"answer {len(computed)}"

        return asyncio.run(answers.answer(request_id, body_digest(b"body"), compute))

    assert [answer("a"), answer("a")] == ["answer 1", "answer 1"]
    clock.now = 10.0
    assert answer("a") == "answer 2"  # expired: scored again
    answer("b")
    answer("c")  # a third answer pushes out the oldest ("a")
    assert answer("c") == "answer 4" and answer("a") == "answer 5"
    assert computed == ["a", "a", "b", "c", "a"]


def test_a_duplicate_of_a_failed_request_is_computed_itself() -> None:
    answers = RecentAnswers(max_entries=8, ttl_s=60.0)
    digest = body_digest(b"body")

    async def run() -> tuple[BaseException | str, BaseException | str]:
        started = asyncio.Event()

        async def refused() -> str:
            started.set()
            await asyncio.sleep(0)
            raise ContractError("overloaded", "queue full")

        async def scored() -> str:
            return "scored"

        first = asyncio.ensure_future(answers.answer("x", digest, refused))
        await started.wait()
        second = asyncio.ensure_future(answers.answer("x", digest, scored))
        results = await asyncio.gather(first, second, return_exceptions=True)
        return results[0], results[1]

    first, second = asyncio.run(run())
    assert isinstance(first, ContractError) and second == "scored"
