"""`python -m rewardflow_aesthetic`: serve the aesthetic reward, configured by REWARDFLOW_* env vars."""

from __future__ import annotations

from rewardflow_kit import ServiceSettings, run

from rewardflow_aesthetic.scorer import AestheticScorer


def main() -> None:
    run(AestheticScorer(), ServiceSettings())


if __name__ == "__main__":
    main()
