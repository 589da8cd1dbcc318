"""rewardflow_ocr: the OCR text-rendering reward service (PP-OCR via RapidOCR/onnxruntime or PaddleOCR)."""

from rewardflow_ocr.scorer import OcrScorer

SCORER_SPEC = "rewardflow_ocr.scorer:OcrScorer"
"""What `python -m rewardflow_kit` and `rewardflow serve ocr` load."""

__all__ = ["SCORER_SPEC", "OcrScorer"]
