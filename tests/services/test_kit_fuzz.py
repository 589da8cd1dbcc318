"""Fuzz /v1/score of a live jpeg service with random and mutated bodies: zero 5xx, still healthy after."""

from __future__ import annotations

import base64
import collections
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rewardflow_proto import ERROR_STATUS, ScoreRequest, decode_response, encode_request
from service_calls import JSON, MSGPACK, encoded, random_images

pytestmark = pytest.mark.slow

SENT: collections.Counter[str] = collections.Counter()


def _valid_bodies() -> list[tuple[str, bytes]]:
    images = random_images(2, 4, 4, seed=11)
    raw = ScoreRequest(images=images, prompts=["a", "b"], metadata=[{"k": [1, 2.5]}, None], group_ids=["g", 3])
    listed = ScoreRequest(images=[encoded(images[0], "png"), images[1]], prompts=["a", "b"], id="x")
    return [
        (MSGPACK, encode_request(raw, MSGPACK)),
        (MSGPACK, encode_request(listed, MSGPACK)),
        (JSON, encode_request(raw, JSON)),
        (JSON, encode_request(listed, JSON)),
    ]


VALID = _valid_bodies()
# Bytes that change a msgpack type or length (nil, never-used, bin/str/array/map headers, ints).
MSGPACK_MARKERS = [0x00, 0x7F, 0x80, 0x90, 0xA0, 0xC0, 0xC1, 0xC4, 0xC6, 0xCB, 0xCF, 0xD9, 0xDB, 0xDC, 0xDF, 0xFF]


@st.composite
def mutated_bodies(draw: st.DrawFn) -> tuple[str, str, bytes]:
    content_type, body = draw(st.sampled_from(VALID))
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "marker"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 16))]
        else:
            data[pos] = draw(st.sampled_from(MSGPACK_MARKERS))
    return "mutated", content_type, bytes(data)


# Any code point, lone surrogates included: JSON may carry them, UTF-8 and msgpack cannot.
any_text = st.text(st.characters(exclude_categories=()), max_size=8)
KEYS = ["version", "id", "images", "prompts", "metadata", "group_ids", "format", "shape", "data", "dtype"]
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | any_text
    | st.binary(max_size=48)
    | st.sampled_from(["raw", "png", "jpeg", "uint8"])
)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner),
    max_leaves=16,
)
contract_maps = st.fixed_dictionaries(
    {},
    optional={
        "version": st.just(1) | values,
        "id": values,
        "images": values,
        "prompts": st.lists(st.text(max_size=5), max_size=3) | values,
        "metadata": values,
        "group_ids": values,
    },
)


# The valid request that near_valid_bodies() perturbs.
VALID_VALUE = {
    "version": 1,
    "prompts": ["a"],
    "images": {"format": "raw", "shape": [1, 1, 1, 3], "data": b"\x00\x01\x02"},
}
field_values = any_text | st.lists(any_text, max_size=2) | values


def _pack(value: Any, content_type: str) -> bytes:
    if content_type == JSON:
        return json.dumps(value, default=lambda b: base64.b64encode(b).decode()).encode()
    # surrogatepass: a lone surrogate becomes invalid UTF-8 inside a msgpack str, which the server must refuse.
    return msgpack.packb(value, use_bin_type=True, unicode_errors="surrogatepass")


@st.composite
def structured_bodies(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """Well-formed msgpack/JSON with the contract's keys and random values: reaches the validator."""
    content_type = draw(st.sampled_from([MSGPACK, JSON]))
    return "structured", content_type, _pack(draw(contract_maps | values), content_type)


@st.composite
def near_valid_bodies(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """A valid request with one field replaced by a random value: reaches the code after validation."""
    content_type = draw(st.sampled_from([MSGPACK, JSON]))
    keys = st.sampled_from(["id", "prompts", "metadata", "group_ids", "version"])
    overrides = draw(st.dictionaries(keys, field_values, min_size=1, max_size=1))
    return "near_valid", content_type, _pack({**VALID_VALUE, **overrides}, content_type)


random_bodies = st.tuples(st.just("random"), st.sampled_from([MSGPACK, JSON]), st.binary(max_size=600))


@pytest.fixture(scope="module")
def client(module_service_process: Callable) -> Iterator[httpx.Client]:
    service = module_service_process(
        "jpeg", env={"REWARDFLOW_MAX_BODY_BYTES": "200000", "REWARDFLOW_LOG_LEVEL": "warning"}
    )
    with httpx.Client(base_url=service.url, timeout=10) as http:
        yield http
    assert service.alive(), service.log()


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def check_reply(client: httpx.Client, case: tuple[str, str, bytes], accept: str) -> None:
    """Post one body: any 4xx must be a well-formed error body with the status of its code; never a 5xx."""
    family, content_type, body = case
    SENT[family] += 1
    reply = client.post("/v1/score", content=body, headers={"content-type": content_type, "accept": accept})
    assert reply.status_code < 500, (reply.status_code, reply.content[:300], body[:200])
    reply_type = reply.headers["content-type"].split(";")[0]
    assert reply_type == (accept if accept in (MSGPACK, JSON) else content_type)
    if reply.status_code == 200:
        response = decode_response(reply.content, reply_type)
        assert len(response.errors) >= 1
    else:
        error = (json.loads(reply.content) if reply_type == JSON else msgpack.unpackb(reply.content))["error"]
        assert ERROR_STATUS[error["code"]] == reply.status_code and error["message"]


accepts = st.sampled_from(["*/*", MSGPACK, JSON])


@fuzz_settings(1000)
@given(case=random_bodies, accept=accepts)
def test_random_bytes_never_give_5xx(client: httpx.Client, case: tuple[str, str, bytes], accept: str) -> None:
    check_reply(client, case, accept)


@fuzz_settings(700)
@given(case=structured_bodies(), accept=accepts)
def test_wellformed_bodies_with_random_values_never_give_5xx(
    client: httpx.Client, case: tuple[str, str, bytes], accept: str
) -> None:
    check_reply(client, case, accept)


@fuzz_settings(700)
@given(case=near_valid_bodies(), accept=accepts)
def test_near_valid_bodies_never_give_5xx(client: httpx.Client, case: tuple[str, str, bytes], accept: str) -> None:
    check_reply(client, case, accept)


@fuzz_settings(1000)
@given(case=mutated_bodies(), accept=accepts)
def test_mutated_valid_bodies_never_give_5xx(client: httpx.Client, case: tuple[str, str, bytes], accept: str) -> None:
    check_reply(client, case, accept)


def test_service_is_healthy_and_scores_after_the_fuzzing(client: httpx.Client) -> None:
    assert sum(SENT.values()) >= 3000, SENT
    assert len(SENT) == 4 and min(SENT.values()) >= 600, SENT  # every family really got exercised
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    content_type, body = VALID[0]
    reply = client.post("/v1/score", content=body, headers={"content-type": content_type})
    assert reply.status_code == 200
    assert decode_response(reply.content).errors == [None, None]
    metrics = client.get("/metrics").text
    assert 'code="500"' not in metrics
