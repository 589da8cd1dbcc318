"""Settings every torch reward service shares (env vars REWARDFLOW_*), beside the kit's ServiceSettings."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseSettings):
    """How a torch scorer loads its model; REWARDFLOW_MODEL and REWARDFLOW_DEVICE stay the kit's settings."""

    model_config = SettingsConfigDict(env_prefix="REWARDFLOW_", extra="ignore", protected_namespaces=())

    dtype: str = Field(
        "auto", description="Model dtype: auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16."
    )
    revision: str | None = Field(None, description="Hugging Face revision (branch, tag or commit) of hub ids.")
    processor: str | None = Field(
        None, description="Processor (tokenizer + image preprocessing) id or local path; default: the scorer's."
    )
