"""A batch sent again after its answer was lost keeps its request id, so the service answers it from its cache and
scores each image once: the client's own retries and the trainer's re-sends after an outage alike. Over real HTTP
against a real service whose model a test holds with a gate file; images counted on the service side (/metrics)."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fault_env import scorer_env
from rewardflow_proto.client import RewardServiceError, SyncRewardClient
from rewardflow_trainer import rewards
from rewardflow_trainer.rewards import RewardScorer

READY_S = 300.0  # a hang guard for a service coming up on a busy 2-core machine, not a speed
MAX_BATCH = 2  # the service's batch limit: 5 images go as 3 chunks, each with its own id
WEIGHTS = {"gate_brightness": 1.0}


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

    def idle(self) -> bool:
        """Every request the service received has been handled (the ones whose client gave up included)."""
        return metric(self.url, "rewardflow_in_flight_requests") == 0


@pytest.fixture(scope="module")
def service(module_service_process: Callable, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gated]:
    gate = tmp_path_factory.mktemp("gate") / "open"
    gate.touch()
    limits = {"REWARDFLOW_MAX_QUEUE_DELAY_MS": "0", "REWARDFLOW_MAX_BATCH_SIZE": str(MAX_BATCH)}
    env = scorer_env(TEST_GATE_FILE=str(gate), **limits)
    gated = Gated(module_service_process("fault_scorers:GateScorer", env=env, timeout_s=READY_S).url, gate)
    yield gated
    gate.touch()


def images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_an_outage_resend_of_a_batch_already_scored_is_answered_from_the_cache(
    service: Gated, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The gate holds the model past the client's timeout, so the first attempt's answers are lost on the client
    # side; the scorer sees an outage and re-sends the batch. Before the re-send, the gate opens and the service
    # finishes the first attempt: the re-send must get those answers (same ids, same bodies), not a second scoring.
    monkeypatch.setattr(rewards, "OUTAGE_RETRY_S", 0.05)
    n, chunks = 5, 3
    scored, repeated = service.scored(), service.repeated()
    phases: list[str] = []

    def on_wait(phase: str) -> None:
        phases.append(phase)
        if phase == "waiting_for_services" and not service.gate.exists():
            service.gate.touch()
            until(service.idle)
            assert service.scored() - scored == n, "the first attempt was not scored: this test proves nothing"

    service.gate.unlink()
    try:
        with RewardScorer({"gate": service.url}, WEIGHTS, timeout_s=2.0, max_retries=0, outage_grace_s=600) as scorer:
            scorer.on_wait = on_wait
            result = scorer.score(images(n, seed=1), ["p"] * n)
    finally:
        service.gate.touch()
    assert "waiting_for_services" in phases, "the first attempt was answered: nothing was re-sent"
    assert len(result) == n and np.isfinite(result.total).all()
    assert service.scored() - scored == n, "the re-sent batch was scored again"
    assert service.repeated() - repeated == chunks


def test_the_clients_own_retry_waits_for_the_first_attempt_instead_of_scoring_again(service: Gated) -> None:
    # One replica, a timeout shorter than the gate: the client retries the chunk on the same replica while the
    # first attempt is still in the model. The retry carries the chunk's id, so the service holds it for the
    # first attempt's answer; only then does the gate open.
    n = 2
    scored, repeated = service.scored(), service.repeated()
    outcome: dict[str, object] = {}

    def score() -> None:
        with SyncRewardClient({"gate": service.url}, WEIGHTS, timeout_s=2.0, max_retries=8) as client:
            outcome["result"] = client.score(images(n, seed=2), ["p"] * n)

    service.gate.unlink()
    thread = threading.Thread(target=score)
    try:
        thread.start()
        until(lambda: service.repeated() - repeated >= 1)  # a retry arrived under the first attempt's id
    finally:
        service.gate.touch()
        thread.join(timeout=READY_S)
    result = outcome["result"]
    assert len(result) == n and np.isfinite(result.total).all()
    assert service.scored() - scored == n, "a retry was scored again"


def test_a_given_request_id_is_kept_and_refused_for_another_batch(service: Gated) -> None:
    scored, repeated = service.scored(), service.repeated()
    with SyncRewardClient({"gate": service.url}, WEIGHTS) as client:
        first = client.score(images(3, seed=3), ["p"] * 3, request_id="resend-1")
        again = client.score(images(3, seed=3), ["p"] * 3, request_id="resend-1")
        with pytest.raises(RewardServiceError) as info:
            client.score(images(3, seed=4), ["p"] * 3, request_id="resend-1")
    np.testing.assert_array_equal(again.total, first.total)
    assert service.scored() - scored == 3 and service.repeated() - repeated == 2  # two chunks answered again
    assert info.value.status == 422 and "another body" in str(info.value)
    assert re.search(r"request id 'resend-1:(0-2|2-3)'", str(info.value))  # each chunk's id: the given one, its range


@pytest.mark.parametrize("request_id", ["", "x" * 161])
def test_a_request_id_that_leaves_no_room_for_chunk_ranges_is_refused(request_id: str) -> None:
    with SyncRewardClient({"gate": "http://127.0.0.1:1"}, WEIGHTS) as client:
        with pytest.raises(ValueError, match="request_id: expected a non-empty string of at most 160"):
            client.score(images(1, seed=0), ["p"], request_id=request_id)
