"""The scorer protocol: what a reward service implements (a class with `load()` and `score()`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass
class Batch:
    """What a scorer receives: N decoded images with their prompts, metadata and group ids.

    images: N uint8 arrays of shape (H, W, 3), read-only views where possible (sizes may differ).
    Items of one request are contiguous and never split across batches, so a group-aware scorer
    sees whole groups when the sender keeps a group in one request.
    """

    images: list[np.ndarray]
    prompts: list[str]
    metadata: list[dict[str, Any]] = field(default_factory=list)
    group_ids: list[str | int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)


@dataclass
class ItemScore:
    """One item's scores (one float per score key) and optional JSON-like details."""

    scores: dict[str, float]
    details: dict[str, Any] | None = None


class InvalidRequest(ValueError):
    """Raised by a scorer's optional `validate()`: the whole request gets 422 naming `field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ItemFailure(Exception):
    """Returned (not raised) in an item's slot: that item gets this error, the others their scores."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@runtime_checkable
class Scorer(Protocol):
    """A reward model behind the kit. `score` runs in the kit's model thread, never on the event loop."""

    name: str
    """Service name == folder name == reward name in configs (e.g. "jpeg")."""
    version: str
    model_id: str
    """Hugging Face id or local path; "" when there is no model. The kit sets it from REWARDFLOW_MODEL."""
    device: str
    """"cpu", "cuda", "cuda:1", ...; the kit sets it from REWARDFLOW_DEVICE before load()."""
    score_keys: tuple[str, ...]
    """Names of the scores every ItemScore carries; the first is the primary score."""
    score_range: dict[str, tuple[float | None, float | None]]
    max_batch_size: int

    def load(self) -> None:
        """Load the model (called once, in a background thread, before the warm-up batch)."""
        ...

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        """Score every item; return one ItemScore or ItemFailure per item, in order."""
        ...


def validate_request(scorer: Scorer, prompts: list[str], metadata: list[dict[str, Any]]) -> None:
    """Run the scorer's optional `validate(prompts, metadata)` before any work is queued.

    A scorer defines it when a request can be wrong in a way only the reward knows (OCR: no target
    text; GenEval: no tag). It runs in a worker thread (not the model thread, never the event loop), so
    it must be cheap and thread-safe: no model work, nothing worse than linear in the input.
    """
    check = getattr(scorer, "validate", None)
    if callable(check):
        check(prompts, metadata)
