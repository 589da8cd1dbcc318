"""The background scorer: `submit` returns at once, scoring overlaps other work, waiting is measured."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
from rewardflow_trainer.rewards import RewardScorer

pytestmark = pytest.mark.slow
READY_S = 300.0  # a hang guard for a service coming up on a busy 2-core machine, not a speed


@dataclass
class HeldProbe:
    """A probe service (score = mean brightness) whose score requests wait until the current gate file exists."""

    url: str
    faults: Path

    def new_gate(self, path: Path) -> Path:
        """Hold every score request from now on until `path` exists (the kit's fault file, re-read on change)."""
        self.faults.write_text(json.dumps({"hold_file": str(path), "hold_max_s": 120}))
        time.sleep(0.01)  # a new modification time, whatever the file system's resolution
        return path


@pytest.fixture(scope="module")
def probe(module_service_process: Callable, tmp_path_factory: pytest.TempPathFactory) -> HeldProbe:
    faults = tmp_path_factory.mktemp("faults") / "faults.json"
    faults.write_text("{}")
    service = module_service_process(
        "scorers:ProbeScorer", env={"REWARDFLOW_FAULT_FILE": str(faults)}, timeout_s=READY_S
    )
    return HeldProbe(service.url, faults)


def _images(n: int, value: int) -> np.ndarray:
    return np.full((n, 8, 8, 3), value, dtype=np.uint8)


def _in_flight(url: str) -> float:
    found = re.search(r"^rewardflow_in_flight_requests\{[^}]*\} (\S+)$", httpx.get(url + "/metrics").text, re.M)
    return float(found.group(1)) if found else 0.0


def test_submit_returns_before_scoring_and_result_measures_the_wait(probe: HeldProbe, tmp_path: Path) -> None:
    with RewardScorer({"probe": [probe.url]}, {"probe": 2.0}) as scorer:
        scorer.score(_images(1, 0), ["warm-up"])  # /v1/info and connections, outside the measurement
        scorer.pop_wait_s()
        gate = probe.new_gate(tmp_path / "gate")
        future = scorer.submit(_images(2, 255), ["a", "b"])
        # submit returned while the service holds the request: it did not wait for the score.
        deadline = time.monotonic() + 60
        while _in_flight(probe.url) < 1:
            assert time.monotonic() < deadline, "the request never reached the service"
            time.sleep(0.02)
        assert not future.done()
        opened: list[float] = []
        opener = threading.Timer(0.3, lambda: (gate.touch(), opened.append(time.perf_counter())))
        called = time.perf_counter()
        opener.start()
        result = scorer.result(future)
        opener.join()
        np.testing.assert_allclose(result.total, [2.0, 2.0])  # weight 2 x brightness 1
        np.testing.assert_allclose(result.components["probe"], [1.0, 1.0])
        # result() cannot return before the gate opened: it measured at least that part of the wait.
        assert scorer.pop_wait_s() >= opened[0] - called
        assert scorer.wait_s == 0.0


def test_scoring_overlaps_work_done_meanwhile(probe: HeldProbe, tmp_path: Path) -> None:
    with RewardScorer({"probe": [probe.url]}, {"probe": 1.0}) as scorer:
        scorer.score(_images(1, 0), ["warm-up"])
        scorer.pop_wait_s()
        gate = probe.new_gate(tmp_path / "gate")
        future = scorer.submit(_images(2, 0), ["a", "b"])
        work_start = time.perf_counter()
        gate.touch()  # "sampling the next batch" while the service scores this one, until it is done
        deadline = time.monotonic() + 60
        while not future.done():
            assert time.monotonic() < deadline, "the batch was never scored"
            time.sleep(0.01)
        work_s = time.perf_counter() - work_start
        scorer.result(future)
        # The score arrived during the work, so result() only took it: its wait is a part of the work's time.
        assert scorer.pop_wait_s() < work_s


def test_submit_after_close_names_the_problem(probe: HeldProbe) -> None:
    scorer = RewardScorer({"probe": [probe.url]}, {"probe": 1.0})
    scorer.close()
    scorer.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        scorer.submit(_images(1, 0), ["a"])
