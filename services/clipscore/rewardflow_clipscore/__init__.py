"""rewardflow_clipscore: the CLIPScore reward service (image-prompt agreement under CLIP ViT-L/14)."""

from rewardflow_clipscore.scorer import ClipScoreScorer

SCORER_SPEC = "rewardflow_clipscore.scorer:ClipScoreScorer"
"""What `python -m rewardflow_kit` and `rewardflow serve clipscore` load."""

__all__ = ["SCORER_SPEC", "ClipScoreScorer"]
