"""rewardflow_aesthetic: the LAION aesthetic predictor reward service (CLIP ViT-L/14 + MLP head)."""

from rewardflow_aesthetic.head import AestheticHead, load_head
from rewardflow_aesthetic.scorer import AestheticScorer

SCORER_SPEC = "rewardflow_aesthetic.scorer:AestheticScorer"
"""What `python -m rewardflow_kit` and `rewardflow serve aesthetic` load."""

__all__ = ["SCORER_SPEC", "AestheticHead", "AestheticScorer", "load_head"]
