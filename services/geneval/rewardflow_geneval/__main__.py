"""`python -m rewardflow_geneval`: serve the GenEval reward, configured by REWARDFLOW_* env vars."""

from __future__ import annotations

from rewardflow_kit import ServiceSettings, run

from rewardflow_geneval.scorer import GenevalScorer


def main() -> None:
    run(GenevalScorer(), ServiceSettings())


if __name__ == "__main__":
    main()
