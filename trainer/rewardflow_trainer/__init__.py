"""rewardflow trainer: Flow-GRPO for flow-matching text-to-image models (sampling, SDE, GRPO loop)."""

__version__ = "0.1.0"
