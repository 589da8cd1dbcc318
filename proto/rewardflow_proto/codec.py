"""Encode and decode the wire contract (msgpack natively, JSON for curl users).

Decoding validates everything a peer could get wrong and raises ContractError naming the field,
the value and what was expected. Raw image bytes are viewed by numpy, never copied.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import msgpack

from rewardflow_proto.errors import ContractError
from rewardflow_proto.messages import ErrorBody, Limits, ScoreRequest, ScoreResponse
from rewardflow_proto.msgpack_views import unpack_request
from rewardflow_proto.request_codec import request_from_value, request_to_value
from rewardflow_proto.response_codec import error_from_value, error_to_value, response_from_value, response_to_value

__all__ = [
    "JSON",
    "MSGPACK",
    "ContractError",
    "Limits",
    "decode_error",
    "decode_request",
    "decode_response",
    "dump",
    "encode_error",
    "encode_request",
    "encode_response",
    "error_from_value",
    "error_to_value",
    "media_type",
    "parse_body",
    "request_from_value",
    "request_to_value",
    "response_from_value",
    "response_to_value",
]

MSGPACK = "application/msgpack"
JSON = "application/json"

# How deep msgpack's C unpacker nests arrays and maps before it gives up (with an exception that has no message).
_MSGPACK_MAX_NESTING = 1024


# ---------------------------------------------------------------- parsing bodies


def _finite_json_number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} overflows a float64; only finite numbers are allowed")
    return value


def _reject_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON and not a finite number")


def parse_body(body: bytes | memoryview, content_type: str, limits: Limits = Limits()) -> Any:
    """Bytes to plain values; a body that is not well-formed msgpack/JSON is a `bad_body`.

    In msgpack bodies the `data` bins under `images` come back as memoryviews of `body` (no copy).
    """
    depth = f"the contract allows metadata {limits.max_metadata_depth} levels deep"
    if content_type == MSGPACK:
        try:
            return unpack_request(body, limits.max_images)
        except msgpack.StackError:
            message = f"arrays and maps are nested deeper than {_MSGPACK_MAX_NESTING} levels ({depth})"
            raise ContractError("bad_body", f"body is not valid msgpack: {message}") from None
        except Exception as exc:  # msgpack raises several unrelated types on malformed input
            raise ContractError("bad_body", f"body is not valid msgpack: {exc or type(exc).__name__}") from None
    if content_type == JSON:
        try:
            return json.loads(bytes(body), parse_float=_finite_json_number, parse_constant=_reject_json_constant)
        except RecursionError:
            message = f"arrays and objects are nested too deeply for the parser ({depth})"
            raise ContractError("bad_body", f"body is not valid JSON: {message}") from None
        except ValueError as exc:
            raise ContractError("bad_body", f"body is not valid JSON: {exc}") from None
    raise ContractError(
        "unsupported_media_type",
        f"content type {content_type!r} is not supported; send {MSGPACK} or {JSON}",
    )


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (parameters dropped, lower case)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------- bytes


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dump(value: dict, content_type: str = MSGPACK) -> bytes:
    """Plain values to body bytes: floats as float64, smallest ints, bin for bytes, keys in order."""
    if content_type == JSON:
        return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":")).encode()
    if content_type != MSGPACK:
        raise ValueError(f"content type {content_type!r} is not supported; use {MSGPACK} or {JSON}")
    return msgpack.packb(value, use_bin_type=True, use_single_float=False)


def encode_request(request: ScoreRequest, content_type: str = MSGPACK) -> bytes:
    """ScoreRequest to body bytes (msgpack or JSON with base64 image data)."""
    return dump(request_to_value(request), content_type)


# A buffer at least this large is sent as its own part instead of being copied into the body.
_PART_MIN_BYTES = 1 << 16


def _bin_header(n: int) -> bytes:
    if n < 1 << 8:
        return bytes((0xC4, n))
    if n < 1 << 16:
        return b"\xc5" + n.to_bytes(2, "big")
    return b"\xc6" + n.to_bytes(4, "big")


def _pack_parts(value: Any, packer: msgpack.Packer, small: bytearray, parts: list[bytes | memoryview]) -> None:
    if isinstance(value, dict):
        small += packer.pack_map_header(len(value))
        for key, item in value.items():
            small += packer.pack(key)
            _pack_parts(item, packer, small, parts)
    elif isinstance(value, list):
        small += packer.pack_array_header(len(value))
        for item in value:
            _pack_parts(item, packer, small, parts)
    elif isinstance(value, (bytes, bytearray, memoryview)) and len(memoryview(value).cast("B")) >= _PART_MIN_BYTES:
        view = memoryview(value).cast("B")
        small += _bin_header(len(view))
        parts.append(bytes(small))
        small.clear()
        parts.append(view)
    else:
        small += packer.pack(value)


def encode_request_parts(request: ScoreRequest) -> list[bytes | memoryview]:
    """The msgpack body as parts whose concatenation equals `encode_request(request)`.

    Image buffers of 64 KiB and more are memoryviews of the caller's arrays, not copies: a transport
    that writes the parts one after another (with Content-Length = their total) sends a 12.6 MB batch
    without building a 12.6 MB body first. The arrays must not change until the send completes.
    """
    packer = msgpack.Packer(use_bin_type=True, use_single_float=False)
    small = bytearray()
    parts: list[bytes | memoryview] = []
    _pack_parts(request_to_value(request), packer, small, parts)
    if small:
        parts.append(bytes(small))
    return parts


def encode_response(response: ScoreResponse, content_type: str = MSGPACK) -> bytes:
    """ScoreResponse to body bytes; a non-finite score raises ValueError (send an item error)."""
    return dump(response_to_value(response), content_type)


def encode_error(error: ErrorBody, content_type: str = MSGPACK) -> bytes:
    """ErrorBody to body bytes."""
    return dump(error_to_value(error), content_type)


def decode_request(body: bytes | memoryview, content_type: str = MSGPACK, limits: Limits = Limits()) -> ScoreRequest:
    """Body bytes to a validated ScoreRequest (raw images are views over `body`); raises ContractError."""
    return request_from_value(parse_body(body, content_type, limits), limits, is_json=content_type == JSON)


def decode_response(body: bytes | memoryview, content_type: str = MSGPACK) -> ScoreResponse:
    """Body bytes to a validated ScoreResponse; an error body raises its ContractError."""
    return response_from_value(parse_body(body, content_type))


def decode_error(body: bytes | memoryview, content_type: str = MSGPACK) -> ErrorBody:
    """Error body bytes to an ErrorBody; raises ContractError if it is not one."""
    return error_from_value(parse_body(body, content_type))
