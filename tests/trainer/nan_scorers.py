"""A broken reward service for tests/trainer: `python -m rewardflow_kit nan_scorers:NanJpegScorer` with tests/trainer
on PYTHONPATH."""

from __future__ import annotations

from typing import ClassVar

from rewardflow_kit import Batch, ItemFailure, ItemScore


class NanJpegScorer:
    """The jpeg service's name and score keys, and NaN for every image (a model gone bad): per-item `non_finite`."""

    name = "jpeg"
    version = "0.0.1"
    model_id = ""
    device = "cpu"
    score_keys = ("compressibility", "incompressibility", "size_kb")
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {k: (None, None) for k in score_keys}
    max_batch_size = 64

    def load(self) -> None:
        """Nothing to load."""

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        return [ItemScore(dict.fromkeys(self.score_keys, float("nan"))) for _ in batch.images]
