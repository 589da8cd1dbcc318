"""Typed messages of the wire contract, version 1 (see proto/README.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

VERSION = 1
"""Major version of the contract. Peers with the same major version are compatible."""

ImageFormat = Literal["raw", "png", "jpeg"]
GroupId = str | int | None


@dataclass(frozen=True)
class EncodedImage:
    """One image as PNG or JPEG file bytes; decoded by the service."""

    format: Literal["png", "jpeg"]
    data: bytes | memoryview


Image = np.ndarray | EncodedImage
"""A raw image is a uint8 array of shape (H, W, 3); anything else travels encoded."""


@dataclass
class ScoreRequest:
    """One batch to score: N images, N prompts, optional per-image metadata and group ids.

    `images` is either one contiguous uint8 array (N, H, W, 3) — the fast path for a batch of
    equal-size images — or a list of N images, each a uint8 (H, W, 3) array or an EncodedImage.
    """

    images: np.ndarray | list[Image]
    prompts: list[str]
    metadata: list[dict[str, Any] | None] | None = None
    group_ids: list[GroupId] | None = None
    id: str = ""
    version: int = VERSION

    def __len__(self) -> int:
        return len(self.prompts)


@dataclass(frozen=True)
class ItemError:
    """Why one item of a batch has no score; the other items are unaffected."""

    code: str
    message: str


@dataclass
class ScoreResponse:
    """Named score lists, each of length N; an item that failed has None in every list."""

    scores: dict[str, list[float | None]]
    errors: list[ItemError | None]
    details: list[dict[str, Any] | None] | None = None
    id: str = ""
    service: str = ""
    model: str = ""
    model_version: str = ""
    timing: dict[str, float] = field(default_factory=dict)
    version: int = VERSION

    def __len__(self) -> int:
        return len(self.errors)


@dataclass(frozen=True)
class ErrorBody:
    """A whole-request failure: a machine-readable code and a message a person acts on."""

    code: str
    message: str
    field: str | None = None
    version: int = VERSION


@dataclass(frozen=True)
class Limits:
    """Bounds a decoder enforces before any model work is done."""

    max_images: int = 1024
    max_pixels: int = 4096 * 4096
    max_prompt_chars: int = 10_000
    max_metadata_depth: int = 8


# Whole-request error codes and the HTTP status each travels with.
ERROR_STATUS: dict[str, int] = {
    "bad_body": 400,
    "unsupported_version": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "too_large": 413,
    "unsupported_media_type": 415,
    "invalid_request": 422,
    "overloaded": 429,
    "internal": 500,
    "not_ready": 503,
}

# Per-item error codes (inside a 200 response).
ITEM_ERROR_CODES = ("bad_image", "bad_metadata", "score_failed", "non_finite")
