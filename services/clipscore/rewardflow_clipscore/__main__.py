"""`python -m rewardflow_clipscore`: serve the CLIPScore reward, configured by REWARDFLOW_* env vars."""

from __future__ import annotations

from rewardflow_kit import ServiceSettings, run

from rewardflow_clipscore.scorer import ClipScoreScorer


def main() -> None:
    run(ClipScoreScorer(), ServiceSettings())


if __name__ == "__main__":
    main()
