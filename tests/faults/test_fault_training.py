"""Faults injected into real training runs (bench/faults.py): each costs time, never a score or a bit of the result.

Every scenario runs `rewardflow train --preset tiny_jpeg` shortened against two jpeg replicas and is compared
with a clean run of the same config: exit 0, every epoch logged, the images the services scored equal the
clean run's (each exactly once, counted through /metrics) and the final weights bit-equal to the clean run's.
The runs go two at a time in the background (`Runs`); each test waits for its own.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import faults as harness

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
EPOCHS = 3
WORKERS = max(1, min(2, os.cpu_count() or 1))
"""Runs at a time: each is mostly one single-threaded trainer, so one after the other left a core idle."""


class Runs:
    """The clean run and every scenario this session selected, started in the background `WORKERS` at a time in
    test order; each run has its own replicas, ports and folder. A test waits for its own run's outcome."""

    def __init__(self, workdir: Path, names: list[str]) -> None:
        self.workdir = workdir
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="fault-run")
        self.futures: dict[str, Future[harness.Outcome]] = {
            name: self.pool.submit(harness.run_training, name, workdir, EPOCHS, harness.SCENARIOS[name])
            for name in dict.fromkeys(["clean", *names])
        }

    def outcome(self, name: str) -> harness.Outcome:
        return self.futures[name].result()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module")
def runs(workdir: Path, request: pytest.FixtureRequest) -> Iterator[Runs]:
    """Every test here takes its scenario as the parameter `name`: the selected ones are started up front."""
    mine = [item for item in request.session.items if getattr(item, "module", None) is request.module]
    started = Runs(workdir, [item.callspec.params["name"] for item in mine])
    yield started
    started.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def clean(runs: Runs) -> harness.Outcome:
    outcome = runs.outcome("clean")
    assert outcome.code == 0, outcome.stderr
    assert outcome.epochs == EPOCHS and outcome.scored > 0 and outcome.injected == {}
    return outcome


def run(name: str, runs: Runs, clean: harness.Outcome) -> harness.Outcome:
    outcome = runs.outcome(name)
    assert harness.check(outcome, clean, EPOCHS) == [], outcome.stderr
    return outcome


@pytest.mark.parametrize(("name", "kind", "hits"), [("status_429", "status", 4), ("status_503", "status", 4),
                                                    ("malformed", "malformed", 4)])  # fmt: skip
def test_refused_and_malformed_answers_are_retried_and_nothing_is_lost(
    name: str, kind: str, hits: int, runs: Runs, clean: harness.Outcome
) -> None:
    assert run(name, runs, clean).injected == {kind: hits}  # the faults really happened, then stopped


@pytest.mark.parametrize("name", ["slow"])
def test_a_slow_replica_costs_time_only(name: str, runs: Runs, clean: harness.Outcome) -> None:
    run(name, runs, clean)


@pytest.mark.parametrize("name", ["nonfinite"])
def test_a_non_finite_answer_is_rescored_on_another_replica_and_never_enters_the_advantages(
    name: str, runs: Runs, clean: harness.Outcome
) -> None:
    outcome = run(name, runs, clean)
    assert outcome.injected == {"nonfinite": 1}
    # The client refuses the non-finite answer as off-contract and re-scores that chunk on the other replica, so
    # nothing had to be dropped and the run matched the clean one (run() checked counts and weights).
    assert harness.dropped_samples(outcome.out) == 0
    records = [r for r in harness._metric_records(outcome.out) if "reward_mean" in r]
    assert all(isinstance(r["reward_mean"], float) and r["reward_mean"] == r["reward_mean"] for r in records)


@pytest.mark.parametrize("name", ["pause", "kill_restart"])
def test_a_paused_or_killed_replica_fails_over_and_the_result_is_bit_equal(
    name: str, runs: Runs, clean: harness.Outcome
) -> None:
    run(name, runs, clean)


@pytest.mark.parametrize("name", ["outage"])
def test_all_replicas_gone_waits_checkpoints_exits_then_resumes_bit_equal(
    name: str, runs: Runs, clean: harness.Outcome, workdir: Path
) -> None:
    outcome = run(name, runs, clean)
    log = (workdir / "outage" / "trainer.log").read_text()
    assert "reward.outage_grace_s" in log and f"--resume {outcome.out}" in log
    assert json.loads((outcome.out / "heartbeat.json").read_text())["phase"] == "done"


@pytest.mark.parametrize("name", ["trainer_kill"])
def test_a_trainer_killed_at_a_random_point_resumes_bit_equal(name: str, runs: Runs, clean: harness.Outcome) -> None:
    run(name, runs, clean)
