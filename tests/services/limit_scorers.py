"""Test scorers for the kit's input limits; served with `python -m rewardflow_kit limit_scorers:<Class>`."""

from __future__ import annotations

import os
import time

from scorers import ProbeScorer


class SlowValidateScorer(ProbeScorer):
    """A ProbeScorer whose `validate` takes TEST_VALIDATE_SLEEP_S seconds per request (a costly per-item check)."""

    name = "slowvalidate"

    def validate(self, prompts: list[str], metadata: list[dict]) -> None:
        time.sleep(float(os.environ.get("TEST_VALIDATE_SLEEP_S", "0")))
        super().validate(prompts, metadata)
