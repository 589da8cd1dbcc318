"""Test scorers that exercise the kit; served with `python -m rewardflow_kit scorers:<Class>`.

They are instantiated with no arguments, so they read their knobs from TEST_* environment variables.
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import ClassVar

from rewardflow_kit import Batch, InvalidRequest, ItemFailure, ItemScore


class ProbeScorer:
    """Scores mean brightness; the prompt steers failures so tests can aim at one item.

    prompt "raise": score() raises for the whole batch (the kit must retry items singly);
    "nan" / "inf": returns a non-finite score; "refuse": returns an ItemFailure.
    Every item's details hold the size and id of the batch it was scored in.
    TEST_SCORE_SLEEP_S: seconds each score() call sleeps (a slow model).
    """

    name = "probe"
    version = "0.0.1"
    model_id = ""
    device = "cpu"
    score_keys = ("brightness", "double")
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {"brightness": (0.0, 1.0), "double": (0, 2)}
    max_batch_size = 64

    def __init__(self) -> None:
        self.score_sleep_s = float(os.environ.get("TEST_SCORE_SLEEP_S", "0"))
        self._batch_ids = itertools.count()

    def load(self) -> None:
        """Nothing to load."""

    def validate(self, prompts: list[str], metadata: list[dict]) -> None:
        """Refuse a request whose prompt is "invalid" unless its metadata says `allow`."""
        for i, (prompt, meta) in enumerate(zip(prompts, metadata, strict=True)):
            if prompt == "invalid" and not meta.get("allow"):
                raise InvalidRequest(f"metadata[{i}].allow", f"image {i} has the prompt 'invalid' and no 'allow' flag")

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        if self.score_sleep_s:
            time.sleep(self.score_sleep_s)
        if "raise" in batch.prompts:
            raise RuntimeError("the model crashed on this batch")
        batch_id = next(self._batch_ids)
        results: list[ItemScore | ItemFailure] = []
        for image, prompt in zip(batch.images, batch.prompts, strict=True):
            brightness = float(image.mean()) / 255
            if prompt == "nan":
                brightness = float("nan")
            elif prompt == "inf":
                brightness = float("inf")
            elif prompt == "refuse":
                results.append(ItemFailure("bad_metadata", "this scorer refuses the prompt 'refuse'"))
                continue
            details = {
                "batch_size": len(batch),
                "batch_id": batch_id,
                "group_ids": list(batch.group_ids),
                "read_only": not image.flags.writeable,
            }
            results.append(ItemScore({"brightness": brightness, "double": 2 * brightness}, details))
        return results


class SlowStartScorer(ProbeScorer):
    """load() takes TEST_LOAD_SLEEP_S, then touches TEST_LOADED_FILE; the warm-up waits for TEST_WARMUP_GATE_FILE.

    The gate (at most TEST_WARMUP_MAX_S, 600 s) holds the service in its warm-up until the test has seen it not
    ready, however slowly a loaded machine runs the test; without a gate file the warm-up does not wait.
    """

    def __init__(self) -> None:
        super().__init__()
        self.load_sleep_s = float(os.environ.get("TEST_LOAD_SLEEP_S", "0"))
        self.loaded_file = os.environ.get("TEST_LOADED_FILE")
        self.gate_file = os.environ.get("TEST_WARMUP_GATE_FILE")
        self.warmup_max_s = float(os.environ.get("TEST_WARMUP_MAX_S", "600"))
        self.warmed_up = False

    def load(self) -> None:
        time.sleep(self.load_sleep_s)
        if self.loaded_file:
            Path(self.loaded_file).touch()

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        if not self.warmed_up:
            self.warmed_up = True
            deadline = time.monotonic() + self.warmup_max_s
            while self.gate_file and not Path(self.gate_file).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
        return super().score(batch)


class BrokenLoadScorer(ProbeScorer):
    """load() fails as a missing model file would."""

    def load(self) -> None:
        raise FileNotFoundError("model weights not found at /models/probe.safetensors")
