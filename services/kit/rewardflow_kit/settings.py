"""Service settings from REWARDFLOW_* environment variables (pydantic-settings)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """How one reward service listens, batches and guards itself; every field is an env var REWARDFLOW_<NAME>."""

    model_config = SettingsConfigDict(env_prefix="REWARDFLOW_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 inside a container.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    max_batch_size: int | None = Field(
        None,
        ge=1,
        description="Most images per model call (and per request); default and upper bound: the scorer's own.",
    )
    max_queue_delay_ms: float = Field(
        5.0,
        ge=0,
        description="Triton-style: how long the first queued request waits for others to fill a batch.",
    )
    max_queue_size: int = Field(
        1024,
        ge=1,
        description="Most images waiting in the queue; a request beyond it gets 429 with Retry-After.",
    )
    max_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Largest request body in bytes; a larger one gets 413 before it is read.",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds a request body may take to arrive in full; a slower one gets 408 and its connection "
        "is closed.",
    )
    max_inflight_bodies: int = Field(
        64,
        ge=1,
        description="Most request bodies received at once; one more gets 429 with Retry-After before it is read.",
    )
    max_image_pixels: int = Field(
        4096 * 4096,
        ge=1,
        description="Most pixels (H x W) of one image, raw or as declared by a PNG/JPEG header; more: 413.",
    )
    max_request_pixels: int = Field(
        2**26,
        ge=1,
        description="Most pixels of all images of one request together (3 bytes each once decoded); more: 413.",
    )
    max_batch_pixels: int = Field(
        2**26,
        ge=1,
        description="Most pixels decoded for one model call; merged requests beyond it are scored in several "
        "calls. At least max_request_pixels.",
    )
    answer_cache_size: int = Field(
        4096,
        ge=0,
        description="Most recent answers kept by request id, so that a retry (same id, same body) is answered "
        "again, not scored twice; the same id with another body gets 422. 0: off.",
    )
    answer_cache_ttl_s: float = Field(
        600.0, gt=0, description="Seconds an answer stays in the answer cache (answer_cache_size)."
    )
    api_key: SecretStr | None = Field(
        None,
        description="If set, /v1/score, /v1/info, /v2/models/* (and the docs) need 'Authorization: Bearer <key>'; "
        "health and metrics stay open.",
    )
    device: str | None = Field(None, description="Device for the model (cpu, cuda, cuda:1); default: the scorer's.")
    model: str | None = Field(None, description="Model id or local path; default: the scorer's model_id.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and uvicorn."
    )
    access_log: bool = Field(False, description="Log one line per HTTP request (uvicorn access log).")
    retry_after_s: int = Field(1, ge=1, description="Retry-After seconds sent with 429 (queue full) and 503.")
    docs: bool = Field(
        False, description="Serve /docs, /redoc and /openapi.json; they need the API key when one is set."
    )
    stay_up_on_load_error: bool = Field(
        False,
        description="When the model fails to load, keep running with /readyz 503 and the reason; by default the "
        "service exits (code 3) with one line naming the setting and the cause.",
    )


def settings_error_line(error: ValidationError) -> str:
    """pydantic's errors about REWARDFLOW_* variables as one line: 'REWARDFLOW_X=value: what was expected; ...'."""
    parts = []
    for item in error.errors(include_url=False):
        name = "REWARDFLOW_" + "_".join(str(part) for part in item["loc"]).upper()
        message = item["msg"][:1].lower() + item["msg"][1:]
        parts.append(f"{name}={item['input']!r}: {message}" if "input" in item else f"{name}: {message}")
    return "; ".join(parts)
