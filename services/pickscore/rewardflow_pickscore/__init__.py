"""rewardflow_pickscore: the PickScore reward service (human preference, Kirstain et al. 2023)."""

from rewardflow_pickscore.scorer import PickScoreScorer

SCORER_SPEC = "rewardflow_pickscore.scorer:PickScoreScorer"
"""What `python -m rewardflow_kit` and `rewardflow serve pickscore` load."""

__all__ = ["SCORER_SPEC", "PickScoreScorer"]
