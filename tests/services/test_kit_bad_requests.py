"""Every bad input from issue 3 gets its 4xx with a readable message, and the service stays healthy."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
from rewardflow_proto import ScoreRequest, encode_request
from service_calls import JSON, MSGPACK, error_of, post, random_images

API_KEY = "s3cret-key"
AUTH = {"authorization": f"Bearer {API_KEY}"}
MAX_BODY = 1_000_000
MAX_BATCH = 16


@pytest.fixture(scope="module")
def service(module_service_process: Callable) -> Any:
    return module_service_process(
        "jpeg",
        env={
            "REWARDFLOW_API_KEY": API_KEY,
            "REWARDFLOW_MAX_BODY_BYTES": str(MAX_BODY),
            "REWARDFLOW_MAX_BATCH_SIZE": str(MAX_BATCH),
        },
    )


@pytest.fixture
def url(service: Any) -> Iterator[str]:
    yield service.url
    # After every bad request: still alive, still scoring.
    assert service.alive()
    assert httpx.get(service.url + "/healthz").status_code == 200
    body = encode_request(ScoreRequest(images=random_images(2), prompts=["a", "b"]))
    assert post(service.url, body, headers=AUTH).status_code == 200


def valid(n: int = 2) -> dict[str, Any]:
    images = random_images(n, 8, 8)
    return {
        "version": 1,
        "id": "r",
        "images": {"format": "raw", "shape": list(images.shape), "data": images.tobytes()},
        "prompts": ["a prompt"] * n,
    }


def with_(**changes: Any) -> dict[str, Any]:
    body = valid()
    body.update(changes)
    return body


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# A `metadata` entry for a 2-item request: an array nested 2000 levels deep, then nil (msgpack-python cannot pack it).
DEEP_METADATA = pack("metadata") + b"\x92" + b"\x91" * 2000 + b"\xc0" + b"\xc0"


BAD_MSGPACK: dict[str, tuple[bytes, int, str, str]] = {
    # name: (body, status, code, a word the message must contain)
    "truncated": (pack(valid())[:-7], 400, "bad_body", "msgpack"),
    "trailing_bytes": (pack(valid()) + b"\x00", 400, "bad_body", "trailing"),
    "not_a_map": (pack([1, 2, 3]), 422, "invalid_request", "map"),
    "prompts_not_list": (pack(with_(prompts=7)), 422, "invalid_request", "prompts"),
    "prompt_not_string": (pack(with_(prompts=["a", 3])), 422, "invalid_request", "prompts[1]"),
    "images_wrong_type": (pack(with_(images="pixels")), 422, "invalid_request", "images"),
    "version_wrong_type": (pack(with_(version="1")), 422, "invalid_request", "version"),
    "shape_byte_mismatch": (
        pack(with_(images={"format": "raw", "shape": [2, 8, 8, 3], "data": b"\x00" * 100})),
        422,
        "invalid_request",
        "384",
    ),
    "four_channels": (
        pack(with_(images={"format": "raw", "shape": [2, 8, 8, 4], "data": b"\x00" * 512})),
        422,
        "invalid_request",
        "channels",
    ),
    "zero_images": (
        pack(with_(images={"format": "raw", "shape": [0, 8, 8, 3], "data": b""}, prompts=[])),
        422,
        "invalid_request",
        "empty",
    ),
    "prompt_image_count_mismatch": (pack(with_(prompts=["only one"])), 422, "invalid_request", "prompt"),
    "metadata_count_mismatch": (pack(with_(metadata=[{}])), 422, "invalid_request", "metadata"),
    "nan_in_metadata": (pack(with_(metadata=[{"w": math.nan}, None])), 422, "invalid_request", "metadata[0]"),
    "unknown_version": (pack(with_(version=99)), 400, "unsupported_version", "99"),
    "unknown_format": (
        pack(with_(images=[{"format": "gif", "data": b"GIF89a"}] * 2)),
        422,
        "invalid_request",
        "format",
    ),
    "image_too_many_pixels": (
        pack(with_(images={"format": "raw", "shape": [2, 5000, 5000, 3], "data": b""})),
        413,
        "too_large",
        "pixels",
    ),
    "batch_over_max_batch_size": (
        pack(with_(images=valid(MAX_BATCH + 1)["images"], prompts=["p"] * (MAX_BATCH + 1))),
        413,
        "too_large",
        str(MAX_BATCH),
    ),
    "bad_group_id": (pack(with_(group_ids=[1.5, 2])), 422, "invalid_request", "group_ids"),
    # msgpack's unpacker stops at 1024 levels with an exception that has no message of its own.
    "nested_2000_deep": (b"\x85" + pack(valid())[1:] + DEEP_METADATA, 400, "bad_body", "nested deeper than"),
}


@pytest.mark.parametrize("name", list(BAD_MSGPACK))
def test_bad_msgpack_body_gets_its_4xx(url: str, name: str) -> None:
    body, status, code, word = BAD_MSGPACK[name]
    reply = post(url, body, MSGPACK, headers=AUTH)
    assert reply.status_code == status, reply.content
    assert reply.headers["content-type"].startswith(MSGPACK)
    error = error_of(reply)
    assert error["code"] == code
    assert word in error["message"], error["message"]


BAD_JSON: dict[str, tuple[bytes, int, str, str]] = {
    # The JSON parser itself refuses NaN (not JSON), before the metadata check can see it.
    "malformed": (b'{"version": 1, "prompts": [', 400, "bad_body", "JSON"),
    "nan_in_metadata": (
        json.dumps(
            {
                "version": 1,
                "prompts": ["a"],
                "images": [{"format": "raw", "shape": [1, 1, 3], "data": "AAAA"}],
                "metadata": [{"w": float("nan")}],
            }
        ).encode(),
        400,
        "bad_body",
        "NaN",
    ),
    "not_base64": (
        b'{"version":1,"prompts":["a"],"images":[{"format":"png","data":"%%%"}]}',
        422,
        "invalid_request",
        "base64",
    ),
    "invalid_utf8": (b'{"version":1,"prompts":["\xff"]}', 400, "bad_body", "JSON"),
    "nested_100000_deep": (
        b'{"version":1,"prompts":["a"],"metadata":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}",
        400,
        "bad_body",
        "nested too deeply",
    ),
}


@pytest.mark.parametrize("name", list(BAD_JSON))
def test_bad_json_body_gets_its_4xx_as_json(url: str, name: str) -> None:
    body, status, code, word = BAD_JSON[name]
    reply = post(url, body, JSON, headers=AUTH)
    assert reply.status_code == status, reply.content
    assert reply.headers["content-type"].startswith(JSON)
    error = error_of(reply)
    assert (error["code"], word in error["message"]) == (code, True), error


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream", "image/png"])
def test_wrong_content_type_is_415(url: str, content_type: str | None) -> None:
    reply = post(url, pack(valid()), content_type, headers=AUTH)
    assert reply.status_code == 415
    error = error_of(reply)
    assert error["code"] == "unsupported_media_type" and MSGPACK in error["message"]


def test_body_over_the_limit_is_413_from_content_length(url: str) -> None:
    reply = post(url, b"\x00" * (MAX_BODY + 1), MSGPACK, headers=AUTH)
    assert reply.status_code == 413
    assert str(MAX_BODY) in error_of(reply)["message"]


def test_streamed_body_over_the_limit_is_413_without_content_length(url: str) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"\x00" * 65536

    reply = post(url, chunks(), MSGPACK, headers=AUTH)  # type: ignore[arg-type]  # chunked transfer
    assert reply.status_code == 413
    assert error_of(reply)["code"] == "too_large"


def test_chunked_valid_body_is_scored(url: str) -> None:
    body = pack(valid())
    reply = post(url, iter([body[:10], body[10:]]), MSGPACK, headers=AUTH)  # type: ignore[arg-type]
    assert reply.status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong"}, {"authorization": API_KEY}, {"authorization": "Basic czNjcmV0"}],
    ids=["missing", "wrong", "no_scheme", "basic"],
)
def test_missing_or_wrong_api_key_is_401(url: str, headers: dict[str, str]) -> None:
    reply = post(url, pack(valid()), MSGPACK, headers=headers)
    assert reply.status_code == 401
    assert reply.headers["www-authenticate"].startswith("Bearer")
    assert "API key" in error_of(reply)["message"]
    assert httpx.get(url + "/v1/info", headers=headers).status_code == 401


def test_health_and_metrics_stay_open_without_the_key(url: str) -> None:
    for path in ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready"):
        assert httpx.get(url + path).status_code == 200, path
    assert httpx.get(url + "/v1/info", headers=AUTH).status_code == 200


def test_corrupt_image_is_a_per_item_error_not_a_request_error(url: str) -> None:
    good = np.zeros((8, 8, 3), np.uint8)
    body = pack(
        {
            "version": 1,
            "prompts": ["a", "b", "c"],
            "images": [
                {"format": "raw", "shape": [8, 8, 3], "data": good.tobytes()},
                {"format": "png", "data": b"\x89PNG\r\n\x1a\n not really a png"},
                {"format": "jpeg", "data": b"\xff\xd8\xff\xe0" + b"\x00" * 40},
            ],
        }
    )
    reply = post(url, body, MSGPACK, headers=AUTH)
    assert reply.status_code == 200
    result = msgpack.unpackb(reply.content)
    assert result["errors"][0] is None and result["scores"]["size_kb"][0] > 0
    assert [e["code"] for e in result["errors"][1:]] == ["bad_image", "bad_image"]
    assert result["scores"]["size_kb"][1:] == [None, None]


def test_lone_surrogate_from_json_is_echoed_safely_in_msgpack(url: str) -> None:
    # JSON allows "\ud800"; UTF-8 and msgpack do not, so echoing it naively would be a 500.
    body = b'{"version":1,"id":"\\ud800","prompts":["a"],"images":[{"format":"raw","shape":[1,1,3],"data":"/wAA"}]}'
    reply = post(url, body, JSON, headers={**AUTH, "accept": MSGPACK})
    assert reply.status_code == 200
    assert msgpack.unpackb(reply.content)["id"] == "\\ud800"
    bad = b'{"version":1,"prompts":["a"],"images":[],"metadata":[{"\\ud800":1}]}'
    assert post(url, bad, JSON, headers={**AUTH, "accept": MSGPACK}).status_code == 422
