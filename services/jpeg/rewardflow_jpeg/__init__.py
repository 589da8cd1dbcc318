"""rewardflow_jpeg: the JPEG compressibility reward service (no model; the kit's reference service)."""

from rewardflow_jpeg.scorer import JpegScorer

SCORER_SPEC = "rewardflow_jpeg.scorer:JpegScorer"
"""What `python -m rewardflow_kit` and `rewardflow serve jpeg` load."""

__all__ = ["SCORER_SPEC", "JpegScorer"]
