"""Test scorers for the kit's input limits; served with `python -m rewardflow_kit limit_scorers:<Class>`."""

from __future__ import annotations

import os
import time

from rewardflow_kit import Batch, ItemFailure, ItemScore
from scorers import ProbeScorer


class WorkingSizeScorer(ProbeScorer):
    """A ProbeScorer that declares a working resolution of 64 px (its model would resize to that anyway);
    every item's details also hold the shape of the image it received."""

    name = "worksize"
    working_size = 64

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        results = super().score(batch)
        for image, result in zip(batch.images, results, strict=True):
            if isinstance(result, ItemScore) and result.details is not None:
                result.details["shape"] = list(image.shape)
        return results


class SlowValidateScorer(ProbeScorer):
    """A ProbeScorer whose `validate` takes TEST_VALIDATE_SLEEP_S seconds per request (a costly per-item check)."""

    name = "slowvalidate"

    def validate(self, prompts: list[str], metadata: list[dict]) -> None:
        time.sleep(float(os.environ.get("TEST_VALIDATE_SLEEP_S", "0")))
        super().validate(prompts, metadata)
