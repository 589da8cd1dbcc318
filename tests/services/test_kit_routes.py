"""Routing and auth over real HTTP: unknown paths and methods answer the contract's error body, the API key
guards the same routes everywhere (one dependency), and the API docs are off unless REWARDFLOW_DOCS is on."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from rewardflow_proto import ERROR_STATUS, JSON, MSGPACK, ErrorBody, ScoreRequest, decode_error, encode_request
from service_calls import post, random_images

API_KEY = "routes-key-7"
AUTH = {"authorization": f"Bearer {API_KEY}"}
DOCS = ("/docs", "/redoc", "/openapi.json")
GUARDED = ("/v1/info",)  # and /v2/models/*, which answer OIP's error body: test_oip_protocol.py
OPEN = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")


@pytest.fixture(scope="module")
def plain_url(module_service_process: Callable) -> str:
    """A jpeg service with the defaults: no API key, no docs."""
    return module_service_process("jpeg").url


@pytest.fixture(scope="module")
def keyed_docs_url(module_service_process: Callable) -> str:
    """A jpeg service with an API key and the docs turned on."""
    return module_service_process("jpeg", env={"REWARDFLOW_API_KEY": API_KEY, "REWARDFLOW_DOCS": "true"}).url


def contract_error(reply: httpx.Response, code: str) -> ErrorBody:
    """The reply as the contract's error body (decoded by its content type), with `code` and its status."""
    content_type = reply.headers["content-type"].split(";")[0]
    assert content_type in (JSON, MSGPACK), f"error reply of type {content_type!r}: {reply.content[:200]!r}"
    error = decode_error(reply.content, content_type)
    assert error.code == code and reply.status_code == ERROR_STATUS[code], (reply.status_code, error)
    assert error.message
    return error


def count_of(url: str, code: int) -> float:
    """rewardflow_requests_total for one status code, from /metrics (0 before the first)."""
    text = httpx.get(url + "/metrics").text
    found = re.search(rf'rewardflow_requests_total\{{code="{code}",service="jpeg"\}} (\S+)', text)
    return float(found.group(1)) if found else 0.0


@pytest.mark.parametrize(("method", "path"), [("GET", "/nope"), ("POST", "/v1/scores"), ("GET", "/v1")])
def test_unknown_path_is_not_found_in_the_contract_body(plain_url: str, method: str, path: str) -> None:
    error = contract_error(httpx.request(method, plain_url + path), "not_found")
    assert path in error.message and "detail" not in error.message


def test_unknown_path_answers_in_the_format_of_the_request(plain_url: str) -> None:
    body = encode_request(ScoreRequest(images=random_images(1), prompts=["a"]))
    reply = httpx.post(plain_url + "/v1/scores", content=body, headers={"content-type": MSGPACK})
    assert reply.headers["content-type"] == MSGPACK
    contract_error(reply, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/score", "POST"),
        ("PUT", "/v1/score", "POST"),
        ("POST", "/healthz", "GET"),
        ("DELETE", "/v1/info", "GET"),
    ],
)
def test_wrong_method_is_method_not_allowed_with_allow(plain_url: str, method: str, path: str, allowed: str) -> None:
    reply = httpx.request(method, plain_url + path)
    error = contract_error(reply, "method_not_allowed")
    assert allowed in reply.headers["allow"] and method in error.message and allowed in error.message


@pytest.mark.parametrize("path", DOCS)
def test_docs_are_off_by_default(plain_url: str, path: str) -> None:
    contract_error(httpx.get(plain_url + path), "not_found")


@pytest.mark.parametrize("path", DOCS + GUARDED)
def test_docs_and_guarded_routes_need_the_key(keyed_docs_url: str, path: str) -> None:
    for headers in ({}, {"authorization": "Bearer wrong"}):
        reply = httpx.get(keyed_docs_url + path, headers=headers)
        contract_error(reply, "unauthorized")
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(keyed_docs_url + path, headers=AUTH).status_code == 200


def test_openapi_with_the_key_describes_the_service(keyed_docs_url: str) -> None:
    schema: dict[str, Any] = httpx.get(keyed_docs_url + "/openapi.json", headers=AUTH).json()
    assert schema["info"]["title"] == "rewardflow jpeg"
    assert {"/v1/score", "/v1/info", "/healthz"} <= set(schema["paths"])
    assert not set(DOCS) & set(schema["paths"])
    assert "swagger" in httpx.get(keyed_docs_url + "/docs", headers=AUTH).text.lower()


@pytest.mark.parametrize("path", OPEN)
def test_probes_and_metrics_stay_open(keyed_docs_url: str, path: str) -> None:
    assert httpx.get(keyed_docs_url + path).status_code == 200


def test_refused_score_is_counted_and_answers_in_msgpack(keyed_docs_url: str) -> None:
    body = encode_request(ScoreRequest(images=random_images(1), prompts=["a"]))
    before = count_of(keyed_docs_url, 401)
    reply = post(keyed_docs_url, body, MSGPACK)
    assert reply.headers["content-type"] == MSGPACK
    contract_error(reply, "unauthorized")
    assert count_of(keyed_docs_url, 401) == before + 1
    assert post(keyed_docs_url, body, MSGPACK, headers=AUTH).status_code == 200
