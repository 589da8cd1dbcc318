"""`python -m rewardflow_ocr`: serve the OCR reward, configured by REWARDFLOW_* and REWARDFLOW_OCR_* env vars."""

from __future__ import annotations

from rewardflow_kit import ServiceSettings, run

from rewardflow_ocr.scorer import OcrScorer


def main() -> None:
    run(OcrScorer(), ServiceSettings())


if __name__ == "__main__":
    main()
