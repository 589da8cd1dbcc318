"""examples/curl/score.sh against a live jpeg service: its JSON answer carries the scores the Python binding
gets for the same image; a request the service refuses prints the error body and exits non-zero.

Needs curl (and sh): without it the tests skip, which `make test` (REWARDFLOW_FAIL_ON_SKIP=1) counts as a failure."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from rewardflow_proto import MSGPACK, EncodedImage, ScoreRequest, ScoreResponse, decode_response, encode_request

STARTUP_S = 180.0  # a service's start-up (imports) can take minutes on a loaded 2-core machine

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "curl" / "score.sh"
YELLOW_CYAN = np.array([[[255, 255, 0], [0, 255, 255]]], dtype=np.uint8)
"""The script's built-in image: 1x2, bytes ff ff 00 00 ff ff."""


@pytest.fixture(scope="module")
def jpeg_url(module_service_process: Callable) -> str:
    if shutil.which("curl") is None:
        pytest.skip("curl is needed to test examples/curl")
    return module_service_process("jpeg", timeout_s=STARTUP_S).url


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def binding_scores(url: str, image: np.ndarray | EncodedImage) -> ScoreResponse:
    request = ScoreRequest(images=[image], prompts=["p"])
    reply = httpx.post(url + "/v1/score", content=encode_request(request), headers={"content-type": MSGPACK})
    return decode_response(reply.content)


def test_the_built_in_image_scores_as_with_the_binding(jpeg_url: str) -> None:
    run = run_script(jpeg_url)
    assert run.returncode == 0, run.stderr
    answer = json.loads(run.stdout)
    assert (answer["service"], answer["errors"]) == ("jpeg", [None]) and answer["id"].startswith("curl-example-")
    assert answer["scores"] == binding_scores(jpeg_url, YELLOW_CYAN).scores


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_an_image_file_with_a_quoted_prompt(jpeg_url: str, tmp_path: Path, fmt: str) -> None:
    pixels = np.random.default_rng(7).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt.upper())
    path = tmp_path / f"noise.{'jpg' if fmt == 'jpeg' else fmt}"
    path.write_bytes(buffer.getvalue())
    run = run_script(jpeg_url, str(path), 'a "quoted" \\ prompt')
    assert run.returncode == 0, run.stderr
    expected = binding_scores(jpeg_url, EncodedImage(format=fmt, data=buffer.getvalue()))  # type: ignore[arg-type]
    assert json.loads(run.stdout)["scores"] == expected.scores


def test_a_refused_request_prints_the_error_body_and_fails(jpeg_url: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    run = run_script(jpeg_url, str(empty))
    assert run.returncode != 0
    error = json.loads(run.stdout)["error"]
    assert (error["code"], error["field"]) == ("invalid_request", "images[0].data")
    assert run_script(jpeg_url, str(tmp_path / "missing.png")).returncode == 2
    assert run_script(jpeg_url, str(SCRIPT)).returncode == 2  # neither PNG nor JPEG by its name
