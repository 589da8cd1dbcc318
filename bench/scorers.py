"""Scorers with a known cost, for the benchmarks: a model whose batch costs `a + b·n` milliseconds.

Configured by environment variables so that `python -m rewardflow_kit scorers:FixedCostScorer` can run it:
BENCH_NAME (service name), BENCH_BATCH_MS (a, fixed cost per model call), BENCH_ITEM_MS (b, per image).
The fixed cost per call is what a GPU model has, and what micro-batching amortizes.
"""

from __future__ import annotations

import os
import time
from typing import ClassVar

from rewardflow_kit import Batch, ItemScore


class FixedCostScorer:
    """Sleeps `BENCH_BATCH_MS + n·BENCH_ITEM_MS` per batch and scores each image by its mean."""

    version = "1.0.0"
    model_id = ""
    device = "cpu"
    score_keys = ("score",)
    score_range: ClassVar[dict[str, tuple[float, float]]] = {"score": (0.0, 255.0)}
    max_batch_size = 64

    def __init__(self) -> None:
        self.name = os.environ.get("BENCH_NAME", "fixedcost")
        self.batch_ms = float(os.environ.get("BENCH_BATCH_MS", "20"))
        self.item_ms = float(os.environ.get("BENCH_ITEM_MS", "1"))

    def load(self) -> None:
        """Nothing to load."""

    def score(self, batch: Batch) -> list[ItemScore]:
        time.sleep((self.batch_ms + self.item_ms * len(batch)) / 1000)
        return [ItemScore({"score": float(image[::16, ::16].mean())}) for image in batch.images]
