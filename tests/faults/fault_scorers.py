"""Test scorers for order-based (not wall-clock) tests; served with `python -m rewardflow_kit fault_scorers:<Class>`
with tests/faults and tests/services on PYTHONPATH (fault_env.scorer_env)."""

from __future__ import annotations

import os
import time

from rewardflow_kit import Batch, ItemFailure, ItemScore
from scorers import ProbeScorer


class GateScorer(ProbeScorer):
    """A ProbeScorer whose score() waits until TEST_GATE_FILE exists (at most 120 s), after the warm-up batch:
    a test decides when the model finishes, so it can look at the queue while the model is busy."""

    name = "gate"

    def __init__(self) -> None:
        super().__init__()
        self.gate = os.environ.get("TEST_GATE_FILE")
        self.warmed_up = False

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        if self.warmed_up and self.gate:
            deadline = time.monotonic() + 120
            while not os.path.exists(self.gate) and time.monotonic() < deadline:
                time.sleep(0.01)
        self.warmed_up = True
        return super().score(batch)


class GateLoadScorer(ProbeScorer):
    """A ProbeScorer whose load() waits until TEST_LOAD_GATE exists (at most 120 s): /readyz is 503 until then."""

    name = "gateload"

    def load(self) -> None:
        gate = os.environ.get("TEST_LOAD_GATE")
        deadline = time.monotonic() + 120
        while gate and not os.path.exists(gate) and time.monotonic() < deadline:
            time.sleep(0.01)
