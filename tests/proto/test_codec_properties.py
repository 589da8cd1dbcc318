"""Property tests over the codec: valid messages round trip exactly; garbage only ever raises ContractError."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rewardflow_proto import (
    JSON,
    MSGPACK,
    ContractError,
    EncodedImage,
    ItemError,
    ScoreRequest,
    ScoreResponse,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_text = st.text(max_size=12)
_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_scalars = st.none() | st.booleans() | _ints | _floats | _text
_metadata_values = st.recursive(
    _scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3), max_leaves=12
)
_metadata = st.none() | st.dictionaries(_text, _metadata_values, max_size=4)
_group_ids = st.none() | _text | st.integers(min_value=-(2**63), max_value=2**64 - 1)
_dims = st.integers(min_value=1, max_value=4)


@st.composite
def _raw_image(draw: st.DrawFn) -> np.ndarray:
    h, w = draw(_dims), draw(_dims)
    return np.frombuffer(draw(st.binary(min_size=h * w * 3, max_size=h * w * 3)), np.uint8).reshape(h, w, 3)


_encoded_image = st.builds(
    EncodedImage, format=st.sampled_from(["png", "jpeg"]), data=st.binary(min_size=1, max_size=16)
)


@st.composite
def requests(draw: st.DrawFn) -> ScoreRequest:
    n = draw(st.integers(min_value=1, max_value=5))
    if draw(st.booleans()):
        h, w = draw(_dims), draw(_dims)
        data = draw(st.binary(min_size=n * h * w * 3, max_size=n * h * w * 3))
        images: Any = np.frombuffer(data, np.uint8).reshape(n, h, w, 3)
    else:
        images = draw(st.lists(_raw_image() | _encoded_image, min_size=n, max_size=n))
    return ScoreRequest(
        images=images,
        prompts=draw(st.lists(st.text(max_size=20), min_size=n, max_size=n)),
        metadata=draw(st.none() | st.lists(_metadata, min_size=n, max_size=n)),
        group_ids=draw(st.none() | st.lists(_group_ids, min_size=n, max_size=n)),
        id=draw(st.text(max_size=20)),
    )


@st.composite
def responses(draw: st.DrawFn) -> ScoreResponse:
    n = draw(st.integers(min_value=0, max_value=5))
    errors = draw(st.lists(st.none() | st.builds(ItemError, code=_text, message=_text), min_size=n, max_size=n))
    keys = draw(st.lists(_text, min_size=1, max_size=3, unique=True))
    scores = {k: [None if e is not None else draw(_floats) for e in errors] for k in keys}
    details = draw(st.none() | st.lists(_metadata, min_size=n, max_size=n))
    return ScoreResponse(
        scores=scores,
        errors=errors,
        details=details,
        id=draw(_text),
        service=draw(_text),
        model=draw(_text),
        model_version=draw(_text),
        timing=draw(st.dictionaries(_text, _floats, max_size=3)),
    )


def _same_images(got: Any, want: Any) -> bool:
    if isinstance(want, np.ndarray):
        return isinstance(got, np.ndarray) and got.dtype == np.uint8 and np.array_equal(got, want)
    return len(got) == len(want) and all(
        _same_images(g, w) if isinstance(w, np.ndarray) else g == w for g, w in zip(got, want, strict=True)
    )


def _same_values(got: Any, want: Any) -> bool:
    """Equality that also tells 0.0 from -0.0 (the encoding must keep the sign bit)."""
    if isinstance(want, float):
        return isinstance(got, float) and (got == want and math.copysign(1, got) == math.copysign(1, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and list(got) == list(want) and all(_same_values(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same_values, got, want))
    return type(got) is type(want) and got == want


@PROPERTY
@given(requests())
def test_valid_requests_round_trip_exactly_in_msgpack(request: ScoreRequest) -> None:
    decoded = decode_request(encode_request(request))
    assert _same_images(decoded.images, request.images)
    assert decoded.prompts == request.prompts and decoded.id == request.id
    assert _same_values(decoded.metadata, request.metadata)
    assert _same_values(decoded.group_ids, request.group_ids)


@PROPERTY
@given(requests())
def test_valid_requests_round_trip_in_json(request: ScoreRequest) -> None:
    decoded = decode_request(encode_request(request, JSON), JSON)
    assert _same_images(decoded.images, request.images)
    assert decoded.prompts == request.prompts
    assert decoded.metadata == request.metadata and decoded.group_ids == request.group_ids


@PROPERTY
@given(responses(), st.sampled_from([MSGPACK, JSON]))
def test_valid_responses_round_trip_exactly(response: ScoreResponse, content_type: str) -> None:
    decoded = decode_response(encode_response(response, content_type), content_type)
    assert decoded.errors == response.errors
    assert (
        _same_values(decoded.scores, response.scores) if content_type == MSGPACK else decoded.scores == response.scores
    )
    assert decoded.details == response.details and decoded.timing == response.timing
    assert (decoded.id, decoded.service, decoded.model, decoded.model_version) == (
        response.id,
        response.service,
        response.model,
        response.model_version,
    )


def _decode_any(body: bytes, content_type: str) -> None:
    """Decode as request and as response: each may succeed or raise ContractError, nothing else."""
    for decode in (decode_request, decode_response):
        try:
            decode(body, content_type)
        except ContractError as error:
            assert error.code and error.message and 400 <= error.status < 500


@FUZZ
@given(st.binary(max_size=64), st.sampled_from([MSGPACK, JSON]))
def test_random_bytes_only_raise_contract_errors(body: bytes, content_type: str) -> None:
    _decode_any(body, content_type)


@st.composite
def mutated_bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    content_type = draw(st.sampled_from([MSGPACK, MSGPACK, JSON]))
    if draw(st.booleans()):
        body = bytearray(encode_request(draw(requests()), content_type))
    else:
        body = bytearray(encode_response(draw(responses()), content_type))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(min_value=0, max_value=max(len(body) - 1, 0)))
        if op == "flip" and body:
            body[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "set" and body:
            body[at] = draw(st.sampled_from([0x00, 0x7F, 0xC0, 0xC1, 0xC4, 0xCB, 0xD9, 0xDC, 0xDE, 0xDF, 0xFF]))
        elif op == "insert":
            body[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and body:
            del body[at : at + draw(st.integers(min_value=1, max_value=4))]
        elif op == "truncate":
            del body[at:]
    return bytes(body), content_type


@FUZZ
@given(mutated_bodies())
def test_mutated_valid_bodies_only_raise_contract_errors(case: tuple[bytes, str]) -> None:
    _decode_any(*case)


@PROPERTY
@given(_metadata_values)
def test_any_msgpack_value_in_any_field_only_raises_contract_errors(value: Any) -> None:
    for key in ("version", "id", "images", "prompts", "metadata", "group_ids"):
        body = {"version": 1, "images": [{"format": "raw", "shape": [1, 1, 3], "data": b"abc"}], "prompts": ["p"]}
        body[key] = value
        _decode_any(msgpack.packb(body, use_bin_type=True), MSGPACK)
