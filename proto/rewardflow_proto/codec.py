"""Encode and decode the wire contract (msgpack natively, JSON for curl users).

Decoding validates everything a peer could get wrong and raises ContractError naming the field,
the value and what was expected. Raw image bytes are viewed by numpy, never copied.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from rewardflow_proto.messages import (
    ERROR_STATUS,
    VERSION,
    EncodedImage,
    ErrorBody,
    Image,
    ItemError,
    ScoreRequest,
    ScoreResponse,
)

MSGPACK = "application/msgpack"
JSON = "application/json"


class ContractError(ValueError):
    """A message that breaks the contract; `code` is one of messages.ERROR_STATUS."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    @property
    def status(self) -> int:
        return ERROR_STATUS.get(self.code, 400)

    def to_body(self) -> ErrorBody:
        return ErrorBody(code=self.code, message=self.message, field=self.field)


@dataclass(frozen=True)
class Limits:
    """Bounds a decoder enforces before any model work is done."""

    max_images: int = 1024
    max_pixels: int = 4096 * 4096
    max_prompt_chars: int = 10_000
    max_metadata_depth: int = 8


def _invalid(field: str, message: str) -> ContractError:
    return ContractError("invalid_request", f"{field}: {message}", field)


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


# ---------------------------------------------------------------- parsing bodies


def _no_ext(code: int, data: bytes) -> Any:
    raise ContractError("bad_body", f"msgpack extension type {code} is not part of the contract")


def parse_body(body: bytes | memoryview, content_type: str) -> Any:
    """Bytes to plain values; a body that is not well-formed msgpack/JSON is a `bad_body`."""
    if content_type == MSGPACK:
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_no_ext, timestamp=0)
        except ContractError:
            raise
        except msgpack.ExtraData:
            raise ContractError("bad_body", "body holds trailing bytes after one msgpack message") from None
        except Exception as exc:  # msgpack raises several unrelated types on malformed input
            raise ContractError("bad_body", f"body is not valid msgpack ({type(exc).__name__}: {exc})") from None
    if content_type == JSON:
        try:
            return json.loads(bytes(body))
        except (ValueError, RecursionError) as exc:
            raise ContractError("bad_body", f"body is not valid JSON ({exc})") from None
    raise ContractError(
        "unsupported_media_type",
        f"content type {content_type!r} is not supported; send {MSGPACK} or {JSON}",
    )


def media_type(content_type: str | None) -> str:
    """The bare media type of a Content-Type header (parameters dropped, lower case)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


# ---------------------------------------------------------------- requests


def _check_version(msg: dict) -> int:
    version = msg.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise _invalid("version", f"expected the integer contract version {VERSION}, got {version!r}")
    if version != VERSION:
        raise ContractError(
            "unsupported_version",
            f"contract version {version} is not supported; this peer speaks version {VERSION}",
            "version",
        )
    return version


def _binary(value: Any, field: str, is_json: bool) -> bytes:
    if is_json and isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(field, "expected base64 text") from None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value) if isinstance(value, bytearray) else value
    expected = "base64 text" if is_json else "msgpack bin"
    raise _invalid(field, f"expected {expected}, got {_type_name(value)}")


def _shape(value: Any, field: str, ndim: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) != ndim:
        raise _invalid(field, f"expected a list of {ndim} integers, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _invalid(field, f"expected positive integers, got {value!r}")
    if value[-1] != 3:
        raise _invalid(field, f"images must have 3 channels (RGB, last axis), got shape {value!r}")
    return tuple(value)


def _raw_array(msg: dict, field: str, ndim: int, limits: Limits, is_json: bool) -> np.ndarray:
    dtype = msg.get("dtype", "uint8")
    if dtype != "uint8":
        raise _invalid(f"{field}.dtype", f"only 'uint8' is supported, got {dtype!r}")
    shape = _shape(msg.get("shape"), f"{field}.shape", ndim)
    if shape[-3] * shape[-2] > limits.max_pixels:
        raise ContractError(
            "too_large",
            f"{field}: image of {shape[-3]}x{shape[-2]} pixels exceeds the limit of {limits.max_pixels}",
            f"{field}.shape",
        )
    data = _binary(msg.get("data"), f"{field}.data", is_json)
    expected = math.prod(shape)
    if len(data) != expected:
        raise _invalid(
            f"{field}.data",
            f"holds {len(data)} bytes but shape {list(shape)} of uint8 needs {expected}",
        )
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _image(value: Any, field: str, limits: Limits, is_json: bool) -> Image:
    if not isinstance(value, dict):
        raise _invalid(field, f"expected a map with 'format' and 'data', got {_type_name(value)}")
    fmt = value.get("format")
    if fmt == "raw":
        return _raw_array(value, field, 3, limits, is_json)
    if fmt in ("png", "jpeg"):
        data = _binary(value.get("data"), f"{field}.data", is_json)
        if not data:
            raise _invalid(f"{field}.data", "is empty")
        return EncodedImage(format=fmt, data=data)
    raise _invalid(f"{field}.format", f"expected 'raw', 'png' or 'jpeg', got {fmt!r}")


def _check_value(value: Any, field: str, depth: int, limits: Limits) -> None:
    if depth > limits.max_metadata_depth:
        raise _invalid(field, f"nested deeper than {limits.max_metadata_depth} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise _invalid(field, f"{value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _invalid(field, f"map keys must be strings, got {k!r}")
            _check_value(v, f"{field}.{k}", depth + 1, limits)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_value(v, f"{field}[{i}]", depth + 1, limits)
    elif not (value is None or isinstance(value, (str, int, float, bool, bytes))):
        raise _invalid(field, f"unsupported value of type {_type_name(value)}")


def _per_item_list(msg: dict, key: str, n: int) -> list | None:
    value = msg.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise _invalid(key, f"expected a list of {n} entries or nil, got {_type_name(value)}")
    if len(value) != n:
        raise _invalid(key, f"has {len(value)} entries but there are {n} prompts; give one per image")
    return value


def request_from_value(msg: Any, limits: Limits = Limits(), is_json: bool = False) -> ScoreRequest:
    """Validate a parsed body and build the typed request."""
    if not isinstance(msg, dict):
        raise _invalid("body", f"expected a map at the top level, got {_type_name(msg)}")
    version = _check_version(msg)
    request_id = msg.get("id", "")
    if request_id is None:
        request_id = ""
    if not isinstance(request_id, str) or len(request_id) > 200:
        raise _invalid("id", "expected a string of at most 200 characters")

    prompts = msg.get("prompts")
    if not isinstance(prompts, list):
        raise _invalid("prompts", f"expected a list of strings, got {_type_name(prompts)}")
    n = len(prompts)
    if n == 0:
        raise _invalid("prompts", "the batch is empty: send at least one image and one prompt")
    if n > limits.max_images:
        raise ContractError("too_large", f"batch of {n} images exceeds the limit of {limits.max_images}", "prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise _invalid(f"prompts[{i}]", f"expected a string, got {_type_name(p)}")
        if len(p) > limits.max_prompt_chars:
            raise _invalid(f"prompts[{i}]", f"is {len(p)} characters long; the limit is {limits.max_prompt_chars}")

    raw_images = msg.get("images")
    images: np.ndarray | list[Image]
    if isinstance(raw_images, dict):
        if raw_images.get("format") != "raw":
            raise _invalid("images.format", f"a batch map must have format 'raw', got {raw_images.get('format')!r}")
        images = _raw_array(raw_images, "images", 4, limits, is_json)
        count = images.shape[0]
    elif isinstance(raw_images, list):
        images = [_image(v, f"images[{i}]", limits, is_json) for i, v in enumerate(raw_images)]
        count = len(images)
    else:
        raise _invalid("images", f"expected a raw batch map or a list of images, got {_type_name(raw_images)}")
    if count != n:
        raise _invalid("images", f"has {count} images but there are {n} prompts; give one prompt per image")

    metadata = _per_item_list(msg, "metadata", n)
    if metadata is not None:
        for i, m in enumerate(metadata):
            if m is not None and not isinstance(m, dict):
                raise _invalid(f"metadata[{i}]", f"expected a map or nil, got {_type_name(m)}")
            _check_value(m, f"metadata[{i}]", 0, limits)
    group_ids = _per_item_list(msg, "group_ids", n)
    if group_ids is not None:
        for i, g in enumerate(group_ids):
            if isinstance(g, bool) or not (g is None or isinstance(g, (str, int))):
                raise _invalid(f"group_ids[{i}]", f"expected a string, an integer or nil, got {g!r}")
    return ScoreRequest(
        images=images, prompts=prompts, metadata=metadata, group_ids=group_ids, id=request_id, version=version
    )


def decode_request(body: bytes | memoryview, content_type: str = MSGPACK, limits: Limits = Limits()) -> ScoreRequest:
    """Body bytes to a validated ScoreRequest; raises ContractError."""
    return request_from_value(parse_body(body, content_type), limits, is_json=content_type == JSON)


def _image_value(image: Image) -> dict:
    if isinstance(image, EncodedImage):
        return {"format": image.format, "data": image.data}
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"a raw image must be uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
    return {"format": "raw", "shape": list(arr.shape), "data": memoryview(np.ascontiguousarray(arr)).cast("B")}


def request_to_value(request: ScoreRequest) -> dict:
    """The request as plain values in the canonical key order of the spec."""
    if isinstance(request.images, np.ndarray):
        arr = request.images
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
            raise ValueError(f"a raw batch must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        images: Any = {
            "format": "raw",
            "shape": list(arr.shape),
            "data": memoryview(np.ascontiguousarray(arr)).cast("B"),
        }
    else:
        images = [_image_value(im) for im in request.images]
    value: dict[str, Any] = {"version": request.version, "id": request.id, "images": images, "prompts": list(request.prompts)}
    if request.metadata is not None:
        value["metadata"] = list(request.metadata)
    if request.group_ids is not None:
        value["group_ids"] = list(request.group_ids)
    return value


# ---------------------------------------------------------------- responses and errors


def response_to_value(response: ScoreResponse) -> dict:
    value: dict[str, Any] = {
        "version": response.version,
        "id": response.id,
        "service": response.service,
        "model": response.model,
        "model_version": response.model_version,
        "scores": {k: list(v) for k, v in response.scores.items()},
        "errors": [None if e is None else {"code": e.code, "message": e.message} for e in response.errors],
    }
    if response.details is not None:
        value["details"] = list(response.details)
    value["timing"] = dict(response.timing)
    return value


def response_from_value(msg: Any) -> ScoreResponse:
    """Validate a parsed response body (client side)."""
    if not isinstance(msg, dict):
        raise ContractError("bad_body", f"response is not a map but {_type_name(msg)}")
    if "error" in msg:
        err = error_from_value(msg)
        raise ContractError(err.code, err.message, err.field)
    _check_version(msg)
    errors_v = msg.get("errors")
    scores_v = msg.get("scores")
    if not isinstance(errors_v, list) or not isinstance(scores_v, dict):
        raise ContractError("bad_body", "response lacks the 'errors' list or the 'scores' map")
    n = len(errors_v)
    errors: list[ItemError | None] = []
    for i, e in enumerate(errors_v):
        if e is None:
            errors.append(None)
        elif isinstance(e, dict) and isinstance(e.get("code"), str):
            errors.append(ItemError(code=e["code"], message=str(e.get("message", ""))))
        else:
            raise ContractError("bad_body", f"errors[{i}] is neither nil nor a map with a code")
    scores: dict[str, list[float | None]] = {}
    for key, values in scores_v.items():
        if not isinstance(values, list) or len(values) != n:
            raise ContractError("bad_body", f"scores.{key} is not a list of {n} numbers")
        scores[key] = [None if v is None else float(v) for v in values]
    details = msg.get("details")
    if details is not None and (not isinstance(details, list) or len(details) != n):
        raise ContractError("bad_body", f"details is not a list of {n} entries")
    return ScoreResponse(
        scores=scores,
        errors=errors,
        details=details,
        id=str(msg.get("id", "")),
        service=str(msg.get("service", "")),
        model=str(msg.get("model", "")),
        model_version=str(msg.get("model_version", "")),
        timing=dict(msg.get("timing") or {}),
    )


def error_to_value(error: ErrorBody) -> dict:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.field is not None:
        body["field"] = error.field
    return {"version": error.version, "error": body}


def error_from_value(msg: dict) -> ErrorBody:
    body = msg.get("error")
    if not isinstance(body, dict):
        raise ContractError("bad_body", "error body lacks the 'error' map")
    return ErrorBody(code=str(body.get("code", "")), message=str(body.get("message", "")), field=body.get("field"))


# ---------------------------------------------------------------- bytes


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dump(value: dict, content_type: str = MSGPACK) -> bytes:
    """Plain values to body bytes. Floats are float64; map keys keep their order."""
    if content_type == JSON:
        return json.dumps(value, default=_json_default, allow_nan=False, separators=(",", ":")).encode()
    return msgpack.packb(value, use_bin_type=True, use_single_float=False)


def encode_request(request: ScoreRequest, content_type: str = MSGPACK) -> bytes:
    return dump(request_to_value(request), content_type)


def encode_response(response: ScoreResponse, content_type: str = MSGPACK) -> bytes:
    return dump(response_to_value(response), content_type)


def encode_error(error: ErrorBody, content_type: str = MSGPACK) -> bytes:
    return dump(error_to_value(error), content_type)


def decode_response(body: bytes, content_type: str = MSGPACK) -> ScoreResponse:
    return response_from_value(parse_body(body, content_type))
