"""OCR service settings from REWARDFLOW_OCR_* environment variables (beside the kit's REWARDFLOW_*)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OcrSettings(BaseSettings):
    """Which OCR engine reads the images and how; every field is an env var REWARDFLOW_OCR_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="REWARDFLOW_OCR_", extra="ignore")

    backend: Literal["rapidocr", "paddleocr"] = Field(
        "rapidocr",
        description="rapidocr: PP-OCRv4 ONNX models shipped in the rapidocr-onnxruntime wheel (offline); "
        "paddleocr: PaddleOCR itself (lang en, no angle classifier, as the paper; needs its models).",
    )
    min_confidence: float = Field(
        0.5, ge=0.0, le=1.0, description="Recognized lines below this confidence are dropped (PaddleOCR's drop_score)."
    )
    rec_batch_size: int = Field(
        6,
        ge=1,
        description="Text lines per recognition call (PaddleOCR's rec_batch_num); the lines of all images of a "
        "batch are pooled, sorted by width and cut into calls of this size. Larger pads more (slower on CPU: "
        "32 read 1.26x slower than 6); raise it on a GPU.",
    )
    det_limit_side_len: int = Field(
        960, ge=32, description="Detection input: longest side shrunk to this (PaddleOCR's det_limit_side_len, 'max')."
    )
    threads: int = Field(
        1,
        ge=0,
        description="onnxruntime intra-op threads per model (rapidocr); 0: every CPU this process may use. One by "
        "default: on a 2-core machine shared with other work (a local stack next to the trainer) 1 thread read "
        "~2x faster than 2; scale with replicas, or raise it on a dedicated machine.",
    )
