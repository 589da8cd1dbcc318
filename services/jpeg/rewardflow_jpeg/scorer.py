"""JPEG compressibility: the size of each image saved as JPEG at quality 95 (as in DDPO / Flow-GRPO)."""

from __future__ import annotations

import io
from typing import ClassVar

import numpy as np
from PIL import Image
from rewardflow_kit import Batch, ItemScore

JPEG_QUALITY = 95
KB_PER_UNIT = 500.0
"""compressibility = -size_kb / 500, as in the reference's jpeg_compressibility."""


def jpeg_size_kb(image: np.ndarray) -> float:
    """Bytes of `image` (uint8 (H, W, 3)) as a quality-95 JPEG, in kB (1 kB = 1000 bytes)."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.tell() / 1000


class JpegScorer:
    """Scores "compressibility" (-size_kb/500, primary), "incompressibility" (+size_kb/500) and "size_kb"."""

    name = "jpeg"
    version = "1.0.0"
    model_id = ""
    device = "cpu"
    score_keys = ("compressibility", "incompressibility", "size_kb")
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "compressibility": (None, 0.0),
        "incompressibility": (0.0, None),
        "size_kb": (0.0, None),
    }
    max_batch_size = 256

    def load(self) -> None:
        """Nothing to load: the score is a JPEG encoder."""

    def score(self, batch: Batch) -> list[ItemScore]:
        results = []
        for image in batch.images:
            size_kb = jpeg_size_kb(image)
            results.append(
                ItemScore(
                    {
                        "compressibility": -size_kb / KB_PER_UNIT,
                        "incompressibility": size_kb / KB_PER_UNIT,
                        "size_kb": size_kb,
                    }
                )
            )
        return results
