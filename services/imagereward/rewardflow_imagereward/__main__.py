"""`python -m rewardflow_imagereward`: serve the ImageReward reward, configured by REWARDFLOW_* env vars."""

from __future__ import annotations

from rewardflow_kit import ServiceSettings, run

from rewardflow_imagereward.scorer import ImageRewardScorer


def main() -> None:
    run(ImageRewardScorer(), ServiceSettings())


if __name__ == "__main__":
    main()
