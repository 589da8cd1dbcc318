"""Colour of a detected object: CLIP zero-shot over GenEval's ten colour words on the object's masked crop."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from rewardflow_vision import ClipEmbedder

from rewardflow_geneval.metadata import COLORS

# From djghosh13/geneval evaluation/evaluate_images.py (color_classification): the prompt templates.
COLOR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {c} {name}",
    "a photo of a {c}-colored {name}",
    "a photo of a {c} object",
)
BACKGROUND = (153, 153, 153)
"""GenEval's default `bgcolor` "#999": what replaces the pixels outside the object's mask."""


# Adapted from djghosh13/geneval evaluation/evaluate_images.py (ImageCrops): composite over grey, crop to
# the box (PIL rounds box coordinates when cropping); numpy instead of PIL.
def masked_crop(image: np.ndarray, mask: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """image uint8 (H, W, 3), mask bool (H, W), box (x1, y1, x2, y2) -> the object on grey, cropped (h, w, 3)."""
    height, width = mask.shape
    x1, y1, x2, y2 = (round(v) for v in box[:4])
    x1, x2 = min(max(x1, 0), width - 1), min(max(x2, x1 + 1), width)
    y1, y2 = min(max(y1, 0), height - 1), min(max(y2, y1 + 1), height)
    crop = np.empty((y2 - y1, x2 - x1, 3), dtype=np.uint8)
    crop[:] = BACKGROUND
    region = mask[y1:y2, x1:x2]
    crop[region] = image[y1:y2, x1:x2][region]
    return crop


class ColourClassifier:
    """Zero-shot colour classification with CLIP; per-class text classifiers are built once and cached."""

    def __init__(self, embedder: ClipEmbedder) -> None:
        self.embedder = embedder
        self._classifiers: dict[str, torch.Tensor] = {}

    def classifier(self, name: str) -> torch.Tensor:
        """(10, D) unit vectors: per colour, the mean of the templates' unit text embeddings (clip_benchmark's way)."""
        if name not in self._classifiers:
            texts = [t.format(c=c, name=name) for c in COLORS for t in COLOR_TEMPLATES]
            embeddings = self.embedder.text_embeddings(texts).view(len(COLORS), len(COLOR_TEMPLATES), -1).mean(1)
            self._classifiers[name] = embeddings / embeddings.norm(dim=-1, keepdim=True)
        return self._classifiers[name]

    @torch.inference_mode()
    def classify(self, crops: Sequence[np.ndarray], class_names: Sequence[str]) -> list[str]:
        """The colour word for each crop (uint8 (h, w, 3)) of an object of the given class, in one CLIP pass."""
        if not crops:
            return []
        features = self.embedder.image_embeddings(list(crops))
        classifiers = torch.stack([self.classifier(name) for name in class_names])  # (N, 10, D)
        logits = torch.einsum("nd,ncd->nc", features, classifiers.to(features.device))
        return [COLORS[i] for i in logits.argmax(-1).tolist()]
