"""rewardflow_qwenvl: Qwen2.5-VL as a prompt-engineered aesthetic judge (Flow-GRPO's experimental QwenVL reward)."""

from rewardflow_qwenvl.scorer import QwenVLScorer

__all__ = ["QwenVLScorer"]
