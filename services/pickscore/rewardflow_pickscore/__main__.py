"""`python -m rewardflow_pickscore`: serve the PickScore reward, configured by REWARDFLOW_* env vars."""

from __future__ import annotations

from rewardflow_kit import ServiceSettings, run

from rewardflow_pickscore.scorer import PickScoreScorer


def main() -> None:
    run(PickScoreScorer(), ServiceSettings())


if __name__ == "__main__":
    main()
