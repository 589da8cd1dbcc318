"""Info, health and metrics endpoints, and the generic runner (the Open Inference Protocol: test_oip_*.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
from rewardflow_proto import VERSION, ScoreRequest
from service_calls import random_images, score

METRIC_NAMES = (
    "rewardflow_requests_total",
    "rewardflow_request_latency_seconds_bucket",
    "rewardflow_batch_size_bucket",
    "rewardflow_in_flight_requests",
    "rewardflow_receiving_bodies",
    "rewardflow_queue_depth",
    "rewardflow_images_scored_total",
)


@pytest.fixture(scope="module")
def jpeg_url(module_service_process: Callable) -> str:
    # Served through the generic runner, which `rewardflow serve` and custom services use.
    return module_service_process("rewardflow_jpeg.scorer:JpegScorer", env={"REWARDFLOW_MAX_BATCH_SIZE": "32"}).url


def test_info_describes_the_service(jpeg_url: str) -> None:
    info = httpx.get(jpeg_url + "/v1/info").json()
    assert info == {
        "name": "jpeg",
        "version": info["version"],
        "model": "",
        "device": "cpu",
        "score_keys": ["compressibility", "incompressibility", "size_kb"],
        "score_range": {"compressibility": [None, 0.0], "incompressibility": [0.0, None], "size_kb": [0.0, None]},
        "max_batch_size": 32,
        "max_body_bytes": 64 * 1024 * 1024,
        "body_timeout_s": 30.0,
        "max_inflight_bodies": 64,
        "max_prompt_chars": 10_000,
        "max_image_pixels": 4096 * 4096,
        "max_request_pixels": 2**26,
        "max_batch_pixels": 2**26,
        "working_size": None,
        "answer_cache_size": 4096,
        "answer_cache_ttl_s": 600.0,
        "contract_version": VERSION,
    }


@pytest.mark.parametrize(
    "path", ["/healthz", "/readyz", "/v2/health/live", "/v2/health/ready", "/v2/models/jpeg/ready"]
)
def test_health_paths_answer_200_when_ready(jpeg_url: str, path: str) -> None:
    assert httpx.get(jpeg_url + path).status_code == 200


def test_metrics_have_the_shared_names_and_count_images(jpeg_url: str) -> None:
    score(jpeg_url, ScoreRequest(images=random_images(5), prompts=["a"] * 5))
    text = httpx.get(jpeg_url + "/metrics").text
    for name in METRIC_NAMES:
        assert f"{name}{{" in text, name
    assert 'rewardflow_requests_total{code="200",service="jpeg"}' in text
    scored = [line for line in text.splitlines() if line.startswith("rewardflow_images_scored_total{")]
    assert float(scored[0].split()[-1]) >= 5


def test_runner_rejects_a_bad_spec_with_a_readable_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "rewardflow_kit", "rewardflow_jpeg.scorer:NoSuchScorer"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "NoSuchScorer" in result.stderr and "rewardflow_jpeg.scorer" in result.stderr
