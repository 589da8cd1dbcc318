"""rewardflow_clipscore: the CLIPScore reward service (image-prompt agreement under CLIP ViT-L/14)."""

from rewardflow_clipscore.scorer import ClipScoreScorer

__all__ = ["ClipScoreScorer"]
