"""DeQA-Score's readout, as data and one function.

The model is asked QUESTION about the image and its answer is started with ANSWER_PREFIX; the next token's logits
at the five level words (LEVELS, each word's first token after a space, as DeQA takes `id_[1]` after LLaMA's BOS)
go through a softmax, and the expected level value (5 for excellent ... 1 for bad) is the quality, in [1, 5].
Flow-GRPO's reward server divides it by 5.
"""

from __future__ import annotations

import numpy as np

QUESTION = "How would you rate the quality of this image?"
ANSWER_PREFIX = "The quality of the image is"
LEVELS: tuple[tuple[str, float], ...] = (("excellent", 5.0), ("good", 4.0), ("fair", 3.0), ("poor", 2.0), ("bad", 1.0))
REWARD_DIVISOR = 5.0


def expected_quality(level_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N,) expected level values and (N, 5) probabilities from (N, 5) logits in LEVELS order."""
    logits = np.asarray(level_logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)  # a stable softmax
    probs = np.exp(shifted)
    probs /= probs.sum(axis=1, keepdims=True)
    values = np.array([value for _, value in LEVELS])
    return probs @ values, probs


def pad_to_square(image: np.ndarray, fill: tuple[int, int, int]) -> np.ndarray:
    """The image centred on a square of colour `fill` (DeQA's expand2square, with the processor's mean colour)."""
    height, width = image.shape[:2]
    side = max(height, width)
    if height == width:
        return image
    out = np.empty((side, side, 3), dtype=np.uint8)
    out[:] = fill
    top, left = (side - height) // 2, (side - width) // 2
    out[top : top + height, left : left + width] = image[..., :3]
    return out
