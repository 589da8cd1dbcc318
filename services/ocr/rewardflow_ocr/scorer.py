"""The OCR reward: how closely the text an OCR engine reads in the image matches the prompt's quoted text."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
from rewardflow_kit import Batch, InvalidRequest, ItemFailure, ItemScore

from rewardflow_ocr.backends import DEFAULT_MODELS, OcrBackend, Reading, make_backend
from rewardflow_ocr.settings import OcrSettings
from rewardflow_ocr.target import MissingTarget, match, normalize, target_text

log = logging.getLogger("rewardflow_ocr")


class OcrScorer:
    """Scores "accuracy" in [0, 1]: 1 if the target is contained in the OCR text, else 1 - edit distance / length.

    The target is the text between the first pair of double quotes of the prompt ("..." or the
    typographic \u201c...\u201d), else the item's metadata `target_text`; a request with an item that has
    neither is refused (422 naming the item). When the OCR engine crashes on an image, that image
    scores 0 with the error in its details (the paper's rule: an OCR failure is a failed rendering),
    rather than an item error: an image that breaks the OCR engine is the policy's doing.
    """

    name = "ocr"
    version = "1.0.0"
    model_id = ""
    device = "cpu"
    score_keys = ("accuracy",)
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {"accuracy": (0.0, 1.0)}
    max_batch_size = 32  # detection runs per image: a bigger batch only adds latency on CPU

    def __init__(self, settings: OcrSettings | None = None) -> None:
        self.settings = settings if settings is not None else OcrSettings()
        self.model_id = DEFAULT_MODELS[self.settings.backend]
        self.backend: OcrBackend | None = None

    def load(self) -> None:
        backend = make_backend(self.settings, self.model_id, self.device)
        backend.load()
        self.backend = backend

    def warmup_batch(self) -> Batch:
        """One white 512x512 image with a black bar, so detection and recognition both run once."""
        image = np.full((512, 512, 3), 255, dtype=np.uint8)
        image[240:272, 128:384] = 0
        return Batch(images=[image], prompts=['a sign that says "warm up"'], metadata=[{}], group_ids=[None])

    def validate(self, prompts: list[str], metadata: list[dict[str, Any]]) -> None:
        """Refuse the whole request (422) if any item has no target text."""
        for i, (prompt, meta) in enumerate(zip(prompts, metadata, strict=True)):
            try:
                target_text(prompt, meta)
            except MissingTarget as exc:
                raise InvalidRequest(f"prompts[{i}]", f"image {i}: {exc}") from None

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        targets: list[str | ItemFailure] = []
        for i, (prompt, meta) in enumerate(zip(batch.prompts, batch.metadata, strict=True)):
            try:
                targets.append(target_text(prompt, meta))
            except MissingTarget as exc:  # only reachable when score() is called without validate()
                targets.append(ItemFailure("bad_metadata", f"image {i}: {exc}"))
        wanted = [image for image, target in zip(batch.images, targets, strict=True) if isinstance(target, str)]
        readings = iter(self.read(wanted))
        return [t if isinstance(t, ItemFailure) else self.item_score(next(readings), t) for t in targets]

    def read(self, images: list[np.ndarray]) -> list[Reading | Exception]:
        """The backend's readings, batched; if the batch fails, image by image so only the culprit fails."""
        if self.backend is None:
            raise RuntimeError("OcrScorer.score() called before load()")
        if not images:
            return []
        try:
            readings = list(self.backend.read(images))
            if len(readings) != len(images):
                raise RuntimeError(f"the OCR backend returned {len(readings)} readings for {len(images)} images")
            return readings
        except Exception as exc:
            if len(images) == 1:
                log.warning("OCR failed on one image: %s: %s", type(exc).__name__, exc)
                return [exc]
            log.warning("OCR failed on a batch of %d (%s); reading image by image", len(images), exc)
        singles: list[Reading | Exception] = []
        for image in images:
            try:
                singles.append(self.backend.read([image])[0])
            except Exception as exc:
                log.warning("OCR failed on one image: %s: %s", type(exc).__name__, exc)
                singles.append(exc)
        return singles

    @staticmethod
    def item_score(reading: Reading | Exception, target: str) -> ItemScore:
        """One image's score and details (recognized text, target, distance; the error if OCR crashed)."""
        if isinstance(reading, Exception):
            return ItemScore(
                {"accuracy": 0.0},
                {"recognized_text": "", "target": target, "distance": len(target),
                 "error": f"{type(reading).__name__}: {reading}"},
            )  # fmt: skip
        found = match(normalize(reading.text), target)
        return ItemScore(
            {"accuracy": found.score},
            {"recognized_text": reading.text, "target": target, "distance": found.distance},
        )
