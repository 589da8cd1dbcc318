"""The jpeg service over real HTTP: its scores equal an independent PIL computation."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image
from rewardflow_proto import ScoreRequest, decode_response, encode_request
from service_calls import JSON, MSGPACK, encoded, post, random_images, score


def pil_jpeg_kb(image: np.ndarray) -> float:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000


@pytest.fixture(scope="module")
def jpeg_url(module_service_process: Callable) -> str:
    return module_service_process("jpeg").url


def assert_jpeg_scores(scores: dict[str, list[float | None]], images: list[np.ndarray]) -> None:
    expected_kb = [pil_jpeg_kb(image) for image in images]
    assert scores["size_kb"] == pytest.approx(expected_kb, rel=0, abs=1e-12)
    assert scores["compressibility"] == pytest.approx([-kb / 500 for kb in expected_kb], abs=1e-12)
    assert scores["incompressibility"] == pytest.approx([kb / 500 for kb in expected_kb], abs=1e-12)


def test_raw_batch_scores_equal_pil_jpeg_sizes(jpeg_url: str) -> None:
    images = random_images(6, 48, 40, seed=1)
    response = score(jpeg_url, ScoreRequest(images=images, prompts=["p"] * 6, id="req-1"))
    assert response.errors == [None] * 6
    assert_jpeg_scores(response.scores, list(images))
    assert len(set(response.scores["size_kb"])) == 6, "different images must get different sizes"
    assert (response.id, response.service, response.model) == ("req-1", "jpeg", "")
    assert response.model_version
    assert set(response.timing) >= {"queue_ms", "compute_ms", "total_ms"}
    assert response.timing["total_ms"] >= response.timing["compute_ms"] >= 0


def test_list_of_raw_images_of_different_sizes(jpeg_url: str) -> None:
    images = [random_images(1, h, w, seed=h)[0] for h, w in [(16, 16), (64, 24), (33, 71)]]
    response = score(jpeg_url, ScoreRequest(images=images, prompts=["a", "b", "c"]))
    assert_jpeg_scores(response.scores, images)


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_encoded_images_are_decoded_then_scored(jpeg_url: str, fmt: str) -> None:
    images = random_images(3, 40, 40, seed=7)
    files = [encoded(image, fmt) for image in images]
    decoded = [np.asarray(Image.open(io.BytesIO(f.data)).convert("RGB")) for f in files]
    if fmt == "png":
        assert all(np.array_equal(a, b) for a, b in zip(decoded, images, strict=True))
    response = score(jpeg_url, ScoreRequest(images=files, prompts=["x"] * 3))
    assert_jpeg_scores(response.scores, decoded)


def test_json_body_works_for_curl_users(jpeg_url: str) -> None:
    images = random_images(2, 16, 16, seed=3)
    response = score(jpeg_url, ScoreRequest(images=images, prompts=["a", "b"]), content_type=JSON)
    assert_jpeg_scores(response.scores, list(images))
    # A hand-written body, as a curl user would type it, with a base64 PNG.
    png = encoded(images[0], "png").data
    body = {"version": 1, "prompts": ["a cat"], "images": [{"format": "png", "data": base64.b64encode(png).decode()}]}
    reply = httpx.post(jpeg_url + "/v1/score", json=body, timeout=10)
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith(JSON)
    assert json.loads(reply.content)["scores"]["size_kb"] == [pil_jpeg_kb(images[0])]


def test_accept_header_picks_the_response_format(jpeg_url: str) -> None:
    body = encode_request(ScoreRequest(images=random_images(1), prompts=["a"]), MSGPACK)
    reply = post(jpeg_url, body, MSGPACK, headers={"accept": JSON})
    assert reply.status_code == 200 and reply.headers["content-type"].startswith(JSON)
    assert decode_response(reply.content, JSON).errors == [None]
    reply = post(jpeg_url, body, MSGPACK, headers={"accept": "*/*"})
    assert reply.headers["content-type"].startswith(MSGPACK)
