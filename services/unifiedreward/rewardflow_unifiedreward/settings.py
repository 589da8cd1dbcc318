"""UnifiedReward's own settings (env REWARDFLOW_UNIFIEDREWARD_*), beside the VLM seam's REWARDFLOW_VLM_*."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class UnifiedRewardSettings(BaseSettings):
    """Which mode scores, how many judge calls a group may cost, and how images are sent."""

    model_config = SettingsConfigDict(env_prefix="REWARDFLOW_UNIFIEDREWARD_", extra="ignore")

    mode: Literal["pointwise", "pairwise"] = Field(
        "pointwise", description="pointwise: rating / 5 per image; pairwise: win rate within the image's group_id."
    )
    max_calls_per_group: int = Field(
        64, ge=1, description="Pairwise: a group of n images costs at most max(this, n) judge calls."
    )
    image_size: int = Field(
        512, ge=0, description="Images are resized to this square before judging (the reference's 512); 0: as sent."
    )
    max_new_tokens: int = Field(512, ge=1, description="Longest answer the judge may write.")
