"""Small helpers the service tests share: build bodies, post them, read replies over real HTTP."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import msgpack
import numpy as np
from PIL import Image
from rewardflow_proto import JSON, MSGPACK, EncodedImage, ScoreRequest, ScoreResponse, decode_response, encode_request

__all__ = ["JSON", "MSGPACK", "encoded", "error_of", "post", "random_images", "score"]


def random_images(n: int, height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    """(n, H, W, 3) uint8 noise with a smooth gradient, so JPEG sizes differ from image to image."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n, height, width, 3), dtype=np.uint8)
    amount = np.linspace(0.1, 1.0, n).reshape(n, 1, 1, 1)
    return (noise * amount).astype(np.uint8)


def encoded(image: np.ndarray, fmt: str) -> EncodedImage:
    """`image` as PNG or JPEG file bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt.upper())
    return EncodedImage(format=fmt, data=buffer.getvalue())  # type: ignore[arg-type]


def post(
    url: str, body: bytes, content_type: str | None = MSGPACK, headers: dict[str, str] | None = None, **kwargs: Any
) -> httpx.Response:
    all_headers = dict(headers or {})
    if content_type is not None:
        all_headers["content-type"] = content_type
    return httpx.post(url + "/v1/score", content=body, headers=all_headers, timeout=30.0, **kwargs)


def score(
    url: str, request: ScoreRequest, content_type: str = MSGPACK, headers: dict[str, str] | None = None
) -> ScoreResponse:
    """Post `request` and decode the 200 response (fails the test with the body otherwise)."""
    response = post(url, encode_request(request, content_type), content_type, headers)
    assert response.status_code == 200, response.content[:500]
    return decode_response(response.content, content_type)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The `error` map of a whole-request error reply, decoded by its content type."""
    content_type = response.headers.get("content-type", "").split(";")[0]
    if content_type == MSGPACK:
        body = msgpack.unpackb(response.content, raw=False)
    else:
        assert content_type == JSON, f"unexpected error content type {content_type!r}"
        body = json.loads(response.content)
    error = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str) and error["message"]
    return error
