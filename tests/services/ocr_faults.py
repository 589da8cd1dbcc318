"""An OCR scorer whose engine crashes on all-red images, real OCR otherwise: serve "ocr_faults:RedCrashOcrScorer"."""

from __future__ import annotations

import numpy as np
from rewardflow_ocr.backends import Reading
from rewardflow_ocr.scorer import OcrScorer


def is_red(image: np.ndarray) -> bool:
    return bool((image[..., 0] == 255).all() and (image[..., 1:] == 0).all())


class RedCrashBackend:
    """Wraps a real backend; raises for any call whose images include an all-red one (as a native crash would)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def load(self) -> None:
        self.inner.load()  # type: ignore[attr-defined]

    def read(self, images: list[np.ndarray]) -> list[Reading]:
        self.calls.append(len(images))
        if any(is_red(image) for image in images):
            raise RuntimeError("simulated OCR engine crash on a red image")
        return self.inner.read(images)  # type: ignore[attr-defined]


class RedCrashOcrScorer(OcrScorer):
    """OcrScorer with the real default backend wrapped in RedCrashBackend."""

    def load(self) -> None:
        super().load()
        self.backend = RedCrashBackend(self.backend)
