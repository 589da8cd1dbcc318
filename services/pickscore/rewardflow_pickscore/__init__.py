"""rewardflow_pickscore: the PickScore reward service (human preference, Kirstain et al. 2023)."""

from rewardflow_pickscore.scorer import PickScoreScorer

__all__ = ["PickScoreScorer"]
