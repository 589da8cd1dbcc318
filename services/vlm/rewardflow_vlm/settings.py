"""Settings of the VLM seam (env REWARDFLOW_VLM_*): which backend, and how to reach or load the judge."""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class VLMSettings(BaseSettings):
    """How a judge service talks to its vision-language model; REWARDFLOW_MODEL names the model for both backends."""

    model_config = SettingsConfigDict(env_prefix="REWARDFLOW_VLM_", extra="ignore", protected_namespaces=())

    backend: Literal["served", "in-process"] = Field(
        "served", description="served: an OpenAI-compatible chat-completions server; in-process: transformers here."
    )
    url: str = Field(
        "http://127.0.0.1:30000/v1", description="Base URL of the server's OpenAI API (ends in /v1), served only."
    )
    api_key: str | None = Field(None, description="Bearer key the server expects (sglang/vLLM --api-key).")
    served_model: str | None = Field(
        None, description="The `model` field sent to the server; default: the scorer's model id (REWARDFLOW_MODEL)."
    )
    concurrency: int = Field(16, ge=1, le=1024, description="Most requests in flight to the server at once.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds one chat-completions request may take (read).")
    connect_timeout_s: float = Field(5.0, gt=0, description="Seconds to open a connection to the server.")
    attempts: int = Field(3, ge=1, le=20, description="Tries per request on a transport error, 429 or 5xx.")
    backoff_s: float = Field(0.5, ge=0, description="First wait between tries; doubles each try, at most 10 s.")
    wait_ready_s: float = Field(
        600.0, ge=0, description="At load, how long to wait for the server's /models to list the model."
    )
    max_new_tokens: int | None = Field(None, ge=1, description="Longest answer; default: the judge's own.")
    dtype: str = Field("auto", description="In-process dtype: auto (bfloat16 on CUDA, float32 on CPU), float32, ...")
    revision: str | None = Field(None, description="Hugging Face revision of REWARDFLOW_MODEL, in-process only.")


class InProcessVLMSettings(VLMSettings):
    """The same settings with in-process as the default backend (for judges whose reference runs them in-process)."""

    model_config = SettingsConfigDict(env_prefix="REWARDFLOW_VLM_", extra="ignore", protected_namespaces=())

    backend: Literal["served", "in-process"] = Field(
        "in-process", description="in-process: transformers here (default); served: an OpenAI-compatible server."
    )
