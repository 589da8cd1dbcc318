"""The background scorer: `submit` returns at once, scoring overlaps other work, waiting is measured."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import pytest
from rewardflow_trainer.rewards import RewardScorer

pytestmark = pytest.mark.slow
SLEEP_S = 1.0


@pytest.fixture(scope="module")
def slow_probe(module_service_process: Callable) -> str:
    """A service whose model takes SLEEP_S per batch (score = mean brightness)."""
    return module_service_process("scorers:ProbeScorer", env={"TEST_SCORE_SLEEP_S": str(SLEEP_S)}).url


def _images(n: int, value: int) -> np.ndarray:
    return np.full((n, 8, 8, 3), value, dtype=np.uint8)


def test_submit_returns_before_scoring_and_result_measures_the_wait(slow_probe: str) -> None:
    with RewardScorer({"probe": [slow_probe]}, {"probe": 2.0}) as scorer:
        scorer.score(_images(1, 0), ["warm-up"])  # /v1/info and connections, outside the timing
        scorer.pop_wait_s()
        start = time.perf_counter()
        future = scorer.submit(_images(2, 255), ["a", "b"])
        assert time.perf_counter() - start < SLEEP_S / 2
        assert not future.done()
        result = scorer.result(future)
        np.testing.assert_allclose(result.total, [2.0, 2.0])  # weight 2 x brightness 1
        np.testing.assert_allclose(result.components["probe"], [1.0, 1.0])
        assert scorer.pop_wait_s() >= SLEEP_S * 0.8
        assert scorer.wait_s == 0.0


def test_scoring_overlaps_work_done_meanwhile(slow_probe: str) -> None:
    with RewardScorer({"probe": [slow_probe]}, {"probe": 1.0}) as scorer:
        scorer.score(_images(1, 0), ["warm-up"])
        scorer.pop_wait_s()
        future = scorer.submit(_images(2, 0), ["a", "b"])
        time.sleep(SLEEP_S * 1.5)  # "sampling the next batch" while the service scores this one
        scorer.result(future)
        assert scorer.pop_wait_s() < SLEEP_S * 0.5


def test_submit_after_close_names_the_problem(slow_probe: str) -> None:
    scorer = RewardScorer({"probe": [slow_probe]}, {"probe": 1.0})
    scorer.close()
    scorer.close()  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        scorer.submit(_images(1, 0), ["a"])
