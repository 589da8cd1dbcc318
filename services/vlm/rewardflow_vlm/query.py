"""What a judge is asked (a query: images and text) and what can go wrong with one answer (JudgeFailure)."""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class JudgeQuery:
    """One question to the VLM: its images in order, then the text, in one user turn.

    `answer_prefix` is text the assistant's turn starts with (DeQA reads the next token after it); served
    backends do not support it.
    """

    images: tuple[np.ndarray, ...]
    text: str
    max_new_tokens: int = 512
    answer_prefix: str = ""
    resize_to: tuple[int, int] | None = field(default=None)
    """(width, height) every image is resized to before it is sent (UnifiedReward's reference: 512 x 512)."""


class JudgeFailure(Exception):
    """One query's failure, returned in its slot (never raised across a batch): code and message for the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def to_pil(image: np.ndarray, resize_to: tuple[int, int] | None = None) -> Image.Image:
    """A uint8 (H, W, 3) array as an RGB PIL image, resized (bicubic, PIL's default) when asked."""
    pil = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    return pil.resize(resize_to, Image.Resampling.BICUBIC) if resize_to is not None else pil


def png_data_url(image: Image.Image) -> str:
    """The image as a `data:image/png;base64,...` URL, what OpenAI-compatible servers take in `image_url`."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
