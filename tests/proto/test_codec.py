"""The codec: round trips, zero-copy raw images, validation errors that name their field."""

from __future__ import annotations

import base64
import copy
import json
import math
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
from rewardflow_proto import (
    ERROR_STATUS,
    JSON,
    MSGPACK,
    ContractError,
    EncodedImage,
    ErrorBody,
    ItemError,
    Limits,
    ScoreRequest,
    ScoreResponse,
    decode_request,
    decode_response,
    encode_error,
    encode_request,
    encode_response,
    media_type,
)
from rewardflow_proto.codec import decode_error, parse_body


def _valid_value() -> dict[str, Any]:
    """A valid request as plain values: 4 raw images in a list, so each field can be broken alone."""
    return {
        "version": 1,
        "id": "r1",
        "images": [{"format": "raw", "shape": [2, 2, 3], "data": bytes(12)} for _ in range(4)],
        "prompts": ["a", "b", "c", "d"],
        "metadata": [{"score": 1.0}, None, {"score": 2}, {"tags": ["x"]}],
        "group_ids": [0, 0, "g", None],
    }


def _pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# ---------------------------------------------------------------- round trips and zero copy


def test_raw_batch_round_trips_as_a_read_only_view_over_the_body() -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    body = encode_request(ScoreRequest(images=images, prompts=["a", "b", "c"], id="x"))
    decoded = decode_request(body)
    assert isinstance(decoded.images, np.ndarray) and decoded.images.shape == (3, 5, 7, 3)
    np.testing.assert_array_equal(decoded.images, images)
    assert np.shares_memory(decoded.images, np.frombuffer(body, dtype=np.uint8))
    assert not decoded.images.flags.writeable


def test_list_images_are_views_over_the_body_too() -> None:
    raw = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    body = bytearray(
        encode_request(ScoreRequest(images=[raw, EncodedImage("png", b"\x89PNG-bytes")], prompts=["a", "b"]))
    )
    decoded = decode_request(body)
    whole = np.frombuffer(body, dtype=np.uint8)
    assert np.shares_memory(decoded.images[0], whole)
    assert isinstance(decoded.images[1], EncodedImage) and bytes(decoded.images[1].data) == b"\x89PNG-bytes"
    assert np.shares_memory(np.frombuffer(decoded.images[1].data, dtype=np.uint8), whole)
    offset = body.find(raw.tobytes())
    body[offset] = 99  # the view sees the body's own memory, not a copy made at decode time
    assert decoded.images[0][0, 0, 0] == 99


def test_views_survive_a_non_canonical_key_order() -> None:
    value = _valid_value()
    reordered = {k: value[k] for k in ("metadata", "prompts", "group_ids", "images", "id", "version")}
    body = _pack(reordered)
    decoded = decode_request(body)
    assert decoded.prompts == value["prompts"] and decoded.metadata == value["metadata"]
    assert np.shares_memory(decoded.images[3], np.frombuffer(body, dtype=np.uint8))


@pytest.mark.parametrize("content_type", [MSGPACK, JSON])
def test_mixed_request_round_trips(content_type: str) -> None:
    request = ScoreRequest(
        images=[np.full((1, 2, 3), 7, np.uint8), EncodedImage("jpeg", b"\xff\xd8jpeg")],
        prompts=["x", "ünïcode ✓"],
        metadata=[{"a": [1, 2.5, {"b": None}], "c": True}, None],
        group_ids=["g", 3],
        id="req-1",
    )
    decoded = decode_request(encode_request(request, content_type), content_type)
    assert (decoded.prompts, decoded.metadata, decoded.group_ids, decoded.id) == (
        request.prompts,
        request.metadata,
        request.group_ids,
        request.id,
    )
    np.testing.assert_array_equal(decoded.images[0], request.images[0])
    assert decoded.images[1] == request.images[1]


def test_json_request_carries_image_data_as_base64() -> None:
    arr = np.arange(6, dtype=np.uint8).reshape(1, 2, 3)
    body = encode_request(ScoreRequest(images=arr[None], prompts=["p"]), JSON)
    value = json.loads(body)
    assert value["images"]["data"] == base64.b64encode(arr.tobytes()).decode()
    np.testing.assert_array_equal(decode_request(body, JSON).images[0], arr)


def test_non_contiguous_arrays_are_encoded_by_value() -> None:
    arr = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)[:, ::2, ::2]
    decoded = decode_request(encode_request(ScoreRequest(images=arr, prompts=["a", "b"])))
    np.testing.assert_array_equal(decoded.images, arr)


@pytest.mark.parametrize("content_type", [MSGPACK, JSON])
def test_response_round_trips_and_scores_are_float64(content_type: str) -> None:
    response = ScoreResponse(
        scores={"score": [1, None, np.float32(0.5)], "strict": [0, None, 1]},
        errors=[None, ItemError("non_finite", "score was nan"), None],
        details=[{"k": 1}, None, None],
        id="r",
        service="jpeg",
        model="m",
        model_version="1",
        timing={"score_ms": 3},
    )
    body = encode_response(response, content_type)
    if content_type == MSGPACK:
        assert body.count(b"\xcb") == 5  # four scores and one timing, each a float64
    decoded = decode_response(body, content_type)
    assert decoded.scores == {"score": [1.0, None, 0.5], "strict": [0.0, None, 1.0]}
    assert all(type(v) is float for v in decoded.scores["score"] if v is not None)
    assert decoded.errors == response.errors and decoded.details == response.details
    assert (decoded.service, decoded.model, decoded.timing) == ("jpeg", "m", {"score_ms": 3.0})


def test_encoding_a_non_finite_score_is_refused() -> None:
    response = ScoreResponse(scores={"score": [math.nan]}, errors=[None])
    with pytest.raises(ValueError, match=r"scores\.score\[0\].*item error"):
        encode_response(response)


@pytest.mark.parametrize("content_type", [MSGPACK, JSON])
def test_error_body_round_trips_and_decode_response_raises_it(content_type: str) -> None:
    error = ErrorBody(code="too_large", message="prompts: a batch of 9 images exceeds 8", field="prompts")
    body = encode_error(error, content_type)
    assert decode_error(body, content_type) == error
    with pytest.raises(ContractError) as info:
        decode_response(body, content_type)
    assert (info.value.code, info.value.field, info.value.status) == ("too_large", "prompts", 413)


def test_unknown_fields_are_ignored() -> None:
    value = _valid_value() | {"future_field": {"x": [1, 2]}, "priority": 3}
    value["images"][0]["color_space"] = "srgb"
    assert decode_request(_pack(value)).prompts == ["a", "b", "c", "d"]
    response = {"version": 1, "scores": {"s": [1.0]}, "errors": [None], "new": 1}
    assert decode_response(_pack(response)).scores == {"s": [1.0]}


# ---------------------------------------------------------------- whole-request errors name their field


def _set(path: list, new: Any) -> Callable[[dict], None]:
    def mutate(value: dict) -> None:
        target = value
        for key in path[:-1]:
            target = target[key]
        if new is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = new

    return mutate


_DELETE = object()

# (mutation, expected code, expected field, words the message must hold)
FIELD_ERRORS = [
    (_set(["version"], 2), "unsupported_version", "version", "version 2 is not supported"),
    (_set(["version"], _DELETE), "invalid_request", "version", "integer contract version"),
    (_set(["version"], "1"), "invalid_request", "version", "'1'"),
    (_set(["id"], 5), "invalid_request", "id", "expected a string"),
    (_set(["prompts"], "abc"), "invalid_request", "prompts", "list of strings"),
    (_set(["prompts"], []), "invalid_request", "prompts", "empty"),
    (_set(["prompts", 3], 7), "invalid_request", "prompts[3]", "expected a string, got int"),
    (_set(["prompts", 1], "x" * 10_001), "invalid_request", "prompts[1]", "10001 characters"),
    (_set(["images"], None), "invalid_request", "images", "got nil"),
    (_set(["images"], [{"format": "raw", "shape": [2, 2, 3], "data": bytes(12)}]), "invalid_request", "images", "1"),
    (_set(["images", 2], "x"), "invalid_request", "images[2]", "expected a map"),
    (_set(["images", 2, "format"], "gif"), "invalid_request", "images[2].format", "'gif'"),
    (_set(["images", 1, "data"], bytes(11)), "invalid_request", "images[1].data", "11 bytes"),
    (_set(["images", 1, "data"], "text"), "invalid_request", "images[1].data", "msgpack bin"),
    (_set(["images", 1, "shape"], [2, 2, 4]), "invalid_request", "images[1].shape", "3 channels"),
    (_set(["images", 1, "shape"], [2, 0, 3]), "invalid_request", "images[1].shape", "positive"),
    (_set(["images", 1, "shape"], [12, 3]), "invalid_request", "images[1].shape", "[H, W, 3]"),
    (_set(["images", 1, "dtype"], "float32"), "invalid_request", "images[1].dtype", "'float32'"),
    (_set(["images", 0, "shape"], [5000, 5000, 3]), "too_large", "images[0].shape", "5000x5000"),
    (_set(["images", 0], {"format": "png", "data": b""}), "invalid_request", "images[0].data", "empty"),
    (_set(["metadata"], {"a": 1}), "invalid_request", "metadata", "list of 4"),
    (_set(["metadata"], [None]), "invalid_request", "metadata", "1 entries"),
    (_set(["metadata", 1], [1]), "invalid_request", "metadata[1]", "a map or nil"),
    (_set(["metadata", 2, "score"], math.nan), "invalid_request", "metadata[2].score", "finite"),
    (_set(["metadata", 2, "score"], -math.inf), "invalid_request", "metadata[2].score", "finite"),
    (_set(["metadata", 3, "tags", 0], math.inf), "invalid_request", "metadata[3].tags[0]", "finite"),
    (_set(["group_ids", 2], 1.5), "invalid_request", "group_ids[2]", "1.5"),
    (_set(["group_ids", 2], True), "invalid_request", "group_ids[2]", "True"),
]


@pytest.mark.parametrize(("mutate", "code", "field", "words"), FIELD_ERRORS)
def test_validation_error_names_its_field(mutate: Callable, code: str, field: str, words: str) -> None:
    value = _valid_value()
    mutate(value)
    with pytest.raises(ContractError) as info:
        decode_request(_pack(value))
    error = info.value
    assert (error.code, error.field) == (code, field)
    assert error.message.startswith(f"{field}: ")
    assert words in error.message
    assert error.status == ERROR_STATUS[code]
    assert error.to_body() == ErrorBody(code=code, message=error.message, field=field)


def test_raw_batch_errors_name_the_batch_fields() -> None:
    value = {"version": 1, "images": {"format": "raw", "shape": [2, 1, 1, 3], "data": bytes(5)}, "prompts": ["a", "b"]}
    with pytest.raises(ContractError, match=r"^images\.data: holds 5 bytes but shape \[2, 1, 1, 3\]") as info:
        decode_request(_pack(value))
    assert info.value.field == "images.data"
    value["images"] |= {"format": "png"}
    with pytest.raises(ContractError) as info:
        decode_request(_pack(value))
    assert info.value.field == "images.format"


def test_metadata_nesting_and_batch_size_limits() -> None:
    value = _valid_value()
    deep: Any = 1
    for _ in range(10):
        deep = {"k": deep}
    value["metadata"][0] = deep
    with pytest.raises(ContractError, match="nested deeper than 8") as info:
        decode_request(_pack(value))
    assert info.value.field.startswith("metadata[0].k.k")
    with pytest.raises(ContractError) as info:
        decode_request(_pack(_valid_value()), limits=Limits(max_images=3))
    assert (info.value.code, info.value.status, info.value.field) == ("too_large", 413, "prompts")


@pytest.mark.parametrize(
    ("body", "content_type", "code", "words"),
    [
        (b"", MSGPACK, "bad_body", "msgpack"),
        (_pack(_valid_value())[:-3], MSGPACK, "bad_body", "ends"),
        (_pack(_valid_value()) + b"\x00", MSGPACK, "bad_body", "trailing"),
        (b"\xc1", MSGPACK, "bad_body", "msgpack"),
        (_pack({"version": 1, "x": msgpack.ExtType(5, b"e")}), MSGPACK, "bad_body", "extension type 5"),
        (_pack({1: 2}), MSGPACK, "bad_body", "string"),
        (_pack([1, 2]), MSGPACK, "invalid_request", "top level"),
        (b"{", JSON, "bad_body", "JSON"),
        (b'{"version": NaN}', JSON, "bad_body", "NaN"),
        (b'{"version": 1e999}', JSON, "bad_body", "finite"),
        (b"{}", "text/plain", "unsupported_media_type", "application/msgpack"),
    ],
)
def test_malformed_bodies_are_contract_errors(body: bytes, content_type: str, code: str, words: str) -> None:
    with pytest.raises(ContractError) as info:
        decode_request(body, content_type)
    assert info.value.code == code and words in info.value.message


def test_json_binary_fields_must_be_base64() -> None:
    value = json.loads(encode_request(ScoreRequest(images=np.zeros((1, 1, 1, 3), np.uint8), prompts=["p"]), JSON))
    value["images"]["data"] = "not base64!"
    with pytest.raises(ContractError, match=r"^images\.data: expected base64 text") as info:
        decode_request(json.dumps(value).encode(), JSON)
    assert info.value.field == "images.data"


# ---------------------------------------------------------------- responses (client side)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_set(["scores", "s", 0], "0.5"), "scores.s[0]"),
        (_set(["scores", "s", 0], True), "scores.s[0]"),
        (_set(["scores", "s", 0], math.nan), "scores.s[0]"),
        (_set(["scores", "s"], [1.0, 2.0]), "scores.s"),
        (_set(["errors", 0], {"message": "no code"}), "errors[0]"),
        (_set(["errors"], None), "errors"),
        (_set(["details"], [1]), "details[0]"),
        (_set(["timing"], "slow"), "timing"),
        (_set(["timing", "t"], "1"), "timing.t"),
        (_set(["service"], 3), "service"),
        (_set(["version"], None), "version"),
    ],
)
def test_malformed_response_is_a_bad_body_naming_the_field(mutate: Callable, field: str) -> None:
    value = {"version": 1, "scores": {"s": [0.5]}, "errors": [None], "details": [None], "timing": {"t": 1.0}}
    mutate(value)
    with pytest.raises(ContractError) as info:
        decode_response(_pack(value))
    assert (info.value.code, info.value.field) == ("bad_body", field)


def test_response_of_another_major_version_is_unsupported() -> None:
    with pytest.raises(ContractError) as info:
        decode_response(_pack({"version": 2, "scores": {}, "errors": []}))
    assert info.value.code == "unsupported_version"


def test_media_type_and_parse_body() -> None:
    assert media_type("Application/MsgPack; charset=binary") == MSGPACK
    assert media_type(None) == ""
    assert parse_body(b'{"a": [1]}', JSON) == {"a": [1]}
    value = copy.deepcopy(_valid_value())
    assert parse_body(_pack(value), MSGPACK)["metadata"] == value["metadata"]


def test_request_parts_join_to_the_encoded_body_and_view_the_images() -> None:
    from rewardflow_proto.codec import encode_request_parts

    rng = np.random.default_rng(7)
    batch = rng.integers(0, 256, size=(4, 128, 96, 3), dtype=np.uint8)
    mixed = [rng.integers(0, 256, size=(200, 150, 3), dtype=np.uint8), EncodedImage("png", bytes(70_000)), batch[0]]
    for request in (
        ScoreRequest(images=batch, prompts=list("abcd"), metadata=[{"k": 1.5}, None, {}, {"t": [1, "x"]}], id="p"),
        ScoreRequest(images=mixed, prompts=["x", "y", "z"], group_ids=[1, 1, "g"]),
        ScoreRequest(images=batch[:, :4, :4], prompts=list("abcd")),  # small: no separate parts
    ):
        parts = encode_request_parts(request)
        assert b"".join(parts) == encode_request(request)
    big = [p for p in encode_request_parts(ScoreRequest(images=batch, prompts=list("abcd"))) if len(p) >= 1 << 16]
    assert len(big) == 1 and np.shares_memory(np.frombuffer(big[0], dtype=np.uint8), batch)
