"""rewardflow_aesthetic: the LAION aesthetic predictor reward service (CLIP ViT-L/14 + MLP head)."""

from rewardflow_aesthetic.head import AestheticHead, load_head
from rewardflow_aesthetic.scorer import AestheticScorer

__all__ = ["AestheticHead", "AestheticScorer", "load_head"]
