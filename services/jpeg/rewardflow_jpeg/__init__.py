"""rewardflow_jpeg: the JPEG compressibility reward service (no model; the kit's reference service)."""

from rewardflow_jpeg.scorer import JpegScorer

__all__ = ["JpegScorer"]
