"""rewardflow_deqa: DeQA-Score's expected image quality (You et al. 2025) read from a VLM's next-token logits."""

from rewardflow_deqa.scorer import DeQAScorer

__all__ = ["DeQAScorer"]
