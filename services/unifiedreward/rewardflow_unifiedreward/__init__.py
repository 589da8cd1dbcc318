"""rewardflow_unifiedreward: the UnifiedReward judge (Wang et al. 2025), pointwise or pairwise (Pref-GRPO)."""

from rewardflow_unifiedreward.scorer import UnifiedRewardScorer

__all__ = ["UnifiedRewardScorer"]
