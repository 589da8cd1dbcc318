"""The trainer's reward rules without a service: an outage past the grace period, non-finite scores, advantages."""

from __future__ import annotations

import time

import numpy as np
import pytest
from rewardflow_proto import ItemError
from rewardflow_proto.client import RewardResult
from rewardflow_trainer import rewards
from rewardflow_trainer.rewards import InvalidScores, RewardOutage, RewardScorer, finite_advantages, screen_rewards

CLOSED = ["http://127.0.0.1:1", "http://127.0.0.1:2"]  # nothing listens there: every replica is gone


def test_every_replica_gone_is_retried_for_the_grace_period_then_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rewards, "OUTAGE_RETRY_S", 0.2)
    phases: list[str] = []
    with RewardScorer({"jpeg": CLOSED}, {"jpeg_compressibility": 1.0}, 1.0, 1, outage_grace_s=1.0) as scorer:
        scorer.on_wait = phases.append
        started = time.monotonic()
        with pytest.raises(RewardOutage) as info:
            scorer.score(np.zeros((3, 4, 4, 3), np.uint8), ["a"] * 3)
    assert time.monotonic() - started >= 1.0  # a lower bound: it kept trying for the whole grace period
    message = str(info.value)
    assert "reward jpeg_compressibility" in message and all(url in message for url in CLOSED)
    assert "(reward.outage_grace_s)" in message and "ConnectError" in message
    assert phases[0] == "scoring" and "waiting_for_services" in phases


def test_without_a_grace_period_the_first_outage_is_the_error() -> None:
    with RewardScorer({"jpeg": CLOSED}, {"jpeg_compressibility": 1.0}, 1.0, 0) as scorer:
        with pytest.raises(Exception) as info:
            scorer.score(np.zeros((1, 4, 4, 3), np.uint8), ["a"])
    assert type(info.value).__name__ == "RewardServiceError"


def _result(total: list[float]) -> RewardResult:
    values = np.array(total)
    errors = [None if np.isfinite(v) else {"jpeg": ItemError("non_finite", "the model produced NaN")} for v in values]
    return RewardResult(values, {"jpeg_compressibility": values}, {}, errors, {})


def test_a_non_finite_score_stops_the_run_naming_the_image_and_cause() -> None:
    with pytest.raises(InvalidScores) as info:
        screen_rewards([_result([1.0, 2.0]), _result([np.nan, 3.0])], "stop", epoch=4)
    message = str(info.value)
    assert "epoch 4: 1 of 4 images" in message and "image 2: jpeg_compressibility=nan" in message
    assert "jpeg: non_finite: the model produced NaN" in message and "reward.on_invalid_score" in message
    from rewardflow_trainer.cli import USER_ERRORS, error_line

    assert isinstance(info.value, USER_ERRORS) and error_line(info.value) == message  # one line, no traceback


def test_dropped_samples_are_counted_and_never_enter_the_advantages() -> None:
    local, dropped = screen_rewards([_result([1.0, np.nan]), _result([3.0, 5.0])], "drop", epoch=0)
    assert dropped == 1 and np.isnan(local["reward"][1])
    seen: list[list[str]] = []

    def update(prompts: list[str], values: np.ndarray) -> np.ndarray:
        seen.append(prompts)
        assert np.isfinite(values).all()
        return values - values.mean()

    advantages = finite_advantages(update, ["a", "b", "c", "d"], local["reward"])
    assert seen == [["a", "c", "d"]]
    np.testing.assert_allclose(advantages, [1.0 - 3.0, 0.0, 0.0, 5.0 - 3.0])
