"""Requests: validate a parsed body into a ScoreRequest, and a ScoreRequest into plain values."""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from rewardflow_proto.errors import ContractError
from rewardflow_proto.errors import invalid as _invalid
from rewardflow_proto.errors import type_name as _type_name
from rewardflow_proto.messages import VERSION, EncodedImage, Image, Limits, ScoreRequest

_MAX_ID_CHARS = 200
_MIN_INT, _MAX_INT = -(2**63), 2**64 - 1  # what msgpack can carry; JSON peers are held to the same


def check_version(msg: dict, bad_code: str = "invalid_request") -> int:
    version = msg.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise ContractError(
            bad_code, f"version: expected the integer contract version {VERSION}, got {version!r}", "version"
        )
    if version != VERSION:
        raise ContractError(
            "unsupported_version",
            f"version: contract version {version} is not supported; this peer speaks version {VERSION}",
            "version",
        )
    return version


def _binary(value: Any, field: str, is_json: bool) -> bytes | memoryview:
    if is_json:
        if not isinstance(value, str):
            raise _invalid(field, f"expected base64 text, got {_type_name(value)}")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(field, f"expected base64 text, got {value[:40]!r}") from None
    if isinstance(value, (bytes, memoryview)):
        return value
    raise _invalid(field, f"expected msgpack bin, got {_type_name(value)}")


def _shape(value: Any, field: str, ndim: int) -> tuple[int, ...]:
    dims = "[N, H, W, 3]" if ndim == 4 else "[H, W, 3]"
    if not isinstance(value, list) or len(value) != ndim:
        raise _invalid(field, f"expected a list of {ndim} integers {dims}, got {value!r}")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _invalid(field, f"expected positive integers {dims}, got {value!r}")
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
            f"{field}.shape: an image of {shape[-3]}x{shape[-2]} pixels exceeds the limit of {limits.max_pixels}",
            f"{field}.shape",
        )
    data = _binary(msg.get("data"), f"{field}.data", is_json)
    expected = math.prod(shape)
    if len(data) != expected:
        raise _invalid(f"{field}.data", f"holds {len(data)} bytes but shape {list(shape)} of uint8 needs {expected}")
    # A view over the body's bytes: read-only when the body is, never copied.
    return np.frombuffer(data, dtype=np.uint8).reshape(shape)


def _image(value: Any, field: str, limits: Limits, is_json: bool) -> Image:
    if not isinstance(value, dict):
        raise _invalid(field, f"expected a map with 'format' and 'data', got {_type_name(value)}")
    fmt = value.get("format")
    if fmt == "raw":
        return _raw_array(value, field, 3, limits, is_json)
    if fmt in ("png", "jpeg"):
        data = _binary(value.get("data"), f"{field}.data", is_json)
        if len(data) == 0:
            raise _invalid(f"{field}.data", f"is empty; expected the bytes of a {fmt} file")
        return EncodedImage(format=fmt, data=data)
    raise _invalid(f"{field}.format", f"expected 'raw', 'png' or 'jpeg', got {fmt!r}")


def _check_value(value: Any, field: str, depth: int, limits: Limits) -> None:
    if depth > limits.max_metadata_depth:
        raise _invalid(field, f"is nested deeper than {limits.max_metadata_depth} levels")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _invalid(field, f"{value} is not a finite number")
    elif isinstance(value, int) and not isinstance(value, bool):
        if not _MIN_INT <= value <= _MAX_INT:
            raise _invalid(field, f"integer {value} is outside the 64-bit range msgpack can carry")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise _invalid(field, f"map keys must be strings, got {k!r}")
            _check_value(v, f"{field}.{k}", depth + 1, limits)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_value(v, f"{field}[{i}]", depth + 1, limits)
    elif not (value is None or isinstance(value, (str, bool, bytes))):
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


def _prompts(msg: dict, limits: Limits) -> list[str]:
    prompts = msg.get("prompts")
    if not isinstance(prompts, list):
        raise _invalid("prompts", f"expected a list of strings, got {_type_name(prompts)}")
    if not prompts:
        raise _invalid("prompts", "the batch is empty: send at least one image and one prompt")
    if len(prompts) > limits.max_images:
        message = f"prompts: a batch of {len(prompts)} images exceeds the limit of {limits.max_images}"
        raise ContractError("too_large", message, "prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise _invalid(f"prompts[{i}]", f"expected a string, got {_type_name(p)}")
        if len(p) > limits.max_prompt_chars:
            raise _invalid(f"prompts[{i}]", f"is {len(p)} characters long; the limit is {limits.max_prompt_chars}")
    return prompts


def _images(msg: dict, n: int, limits: Limits, is_json: bool) -> np.ndarray | list[Image]:
    value = msg.get("images")
    images: np.ndarray | list[Image]
    if isinstance(value, dict):
        if value.get("format") != "raw":
            raise _invalid("images.format", f"a batch map must have format 'raw', got {value.get('format')!r}")
        images = _raw_array(value, "images", 4, limits, is_json)
        count = images.shape[0]
    elif isinstance(value, list):
        images = [_image(v, f"images[{i}]", limits, is_json) for i, v in enumerate(value)]
        count = len(images)
    else:
        raise _invalid("images", f"expected a raw batch map or a list of images, got {_type_name(value)}")
    if count != n:
        raise _invalid("images", f"has {count} images but there are {n} prompts; give one prompt per image")
    return images


def request_from_value(msg: Any, limits: Limits = Limits(), is_json: bool = False) -> ScoreRequest:
    """Validate a parsed body and build the typed request; raises ContractError naming the field."""
    if not isinstance(msg, dict):
        raise _invalid("body", f"expected a map at the top level, got {_type_name(msg)}")
    version = check_version(msg)
    request_id = msg.get("id")
    if request_id is None:
        request_id = ""
    if not isinstance(request_id, str) or len(request_id) > _MAX_ID_CHARS:
        raise _invalid("id", f"expected a string of at most {_MAX_ID_CHARS} characters, got {request_id!r:.60}")
    prompts = _prompts(msg, limits)
    n = len(prompts)
    images = _images(msg, n, limits, is_json)
    metadata = _per_item_list(msg, "metadata", n)
    for i, m in enumerate(metadata or ()):
        if m is not None and not isinstance(m, dict):
            raise _invalid(f"metadata[{i}]", f"expected a map or nil, got {_type_name(m)}")
        _check_value(m, f"metadata[{i}]", 0, limits)
    group_ids = _per_item_list(msg, "group_ids", n)
    for i, g in enumerate(group_ids or ()):
        if isinstance(g, bool) or not (g is None or isinstance(g, (str, int))):
            raise _invalid(f"group_ids[{i}]", f"expected a string, an integer or nil, got {g!r:.60}")
        _check_value(g, f"group_ids[{i}]", 0, limits)
    return ScoreRequest(
        images=images, prompts=prompts, metadata=metadata, group_ids=group_ids, id=request_id, version=version
    )


def _raw_value(arr: np.ndarray) -> dict[str, Any]:
    # memoryview of the (contiguous) array: msgpack packs it as bin without a tobytes() copy.
    return {"format": "raw", "dtype": "uint8", "shape": list(arr.shape), "data": memoryview(arr).cast("B")}


def _image_value(image: Image) -> dict:
    if isinstance(image, EncodedImage):
        return {"format": image.format, "data": image.data}
    arr = np.ascontiguousarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"a raw image must be uint8 (H, W, 3), got {arr.dtype} {arr.shape}")
    return _raw_value(arr)


def request_to_value(request: ScoreRequest) -> dict:
    """The request as plain values in the canonical key order of the spec (no validation)."""
    if isinstance(request.images, np.ndarray):
        arr = np.ascontiguousarray(request.images)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
            raise ValueError(f"a raw batch must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        images: Any = _raw_value(arr)
    else:
        images = [_image_value(im) for im in request.images]
    value: dict[str, Any] = {
        "version": request.version,
        "id": request.id,
        "images": images,
        "prompts": list(request.prompts),
    }
    if request.metadata is not None:
        value["metadata"] = list(request.metadata)
    if request.group_ids is not None:
        value["group_ids"] = list(request.group_ids)
    return value
