"""`python -m rewardflow_jpeg`: serve the jpeg reward, configured by REWARDFLOW_* env vars."""

from __future__ import annotations

from rewardflow_kit import ServiceSettings, run

from rewardflow_jpeg.scorer import JpegScorer


def main() -> None:
    run(JpegScorer(), ServiceSettings())


if __name__ == "__main__":
    main()
