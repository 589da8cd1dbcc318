"""Open Inference Protocol tensors: an infer request's inputs as the contract's request, outcomes as outputs.

Inputs travel as JSON `data` or, with the binary tensor data extension, as bytes after the JSON header (its
length in the `Inference-Header-Content-Length` header, each input's length in `parameters.binary_data_size`).
The inputs become the plain values of a contract request (`images` as one raw batch), which the contract's own
validation then checks, so an OIP request meets the same rules and limits as POST /v1/score.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from rewardflow_proto import JSON, ContractError, Limits, ScoreRequest
from rewardflow_proto.codec import parse_body, request_from_value
from rewardflow_proto.errors import invalid, type_name

from rewardflow_kit.scoring import Outcome

INPUT_TYPES = {"images": "UINT8", "prompts": "BYTES", "metadata": "BYTES"}
"""Every input this protocol takes and its datatype; `metadata` is optional."""
ERRORS_OUTPUT = "errors"
"""A BYTES [N] output: "" for a scored item, else the item's error as JSON `{"code", "message"}`."""
DETAILS_OUTPUT = "details"
"""A BYTES [N] output: the item's details as JSON, or "" when it has none."""
_NDIM = {"images": 4, "prompts": 1, "metadata": 1}
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix in binary tensor data


@dataclass
class InferRequest:
    """A decoded infer request: the contract request, and which outputs to send in which form."""

    request: ScoreRequest
    outputs: list[tuple[str, bool]]
    """(name, binary) of each output to send, in order."""


def split_body(body: memoryview, header_length: str | None) -> tuple[memoryview, memoryview]:
    """The JSON header and the binary tensor data after it (empty without the extension's header)."""
    if header_length is None:
        return body, body[:0]
    try:
        length = int(header_length)
    except ValueError:
        length = -1
    if not 0 <= length <= len(body):
        raise ContractError(
            "bad_body",
            f"Inference-Header-Content-Length {header_length!r}: expected an integer between 0 and the body's "
            f"{len(body)} bytes",
        )
    return body[:length], body[length:]


def _bool_parameter(parameters: Any, key: str, field: str) -> bool:
    value = parameters.get(key, False) if isinstance(parameters, dict) else False
    if not isinstance(value, bool):
        raise invalid(f"{field}.parameters.{key}", f"expected true or false, got {value!r:.60}")
    return value


def _shape(tensor: dict, name: str) -> list[int]:
    shape = tensor.get("shape")
    ndim = _NDIM[name]
    if (
        not isinstance(shape, list)
        or any(isinstance(d, bool) or not isinstance(d, int) or d < 0 for d in shape)
        or (len(shape) != ndim and not (ndim == 1 and len(shape) == 2 and shape[1] == 1))
    ):
        wanted = "[N, H, W, 3]" if ndim == 4 else "[N] (or [N, 1])"
        raise invalid(f"{name}.shape", f"expected {wanted} of non-negative integers, got {shape!r:.80}")
    return shape


def _input_tensors(header: Any) -> dict[str, dict]:
    """The inputs of the header by name, each checked for its name, datatype and shape."""
    if not isinstance(header, dict):
        raise invalid("body", f"expected a JSON object with 'inputs', got {type_name(header)}")
    inputs = header.get("inputs")
    if not isinstance(inputs, list):
        raise invalid("inputs", f"expected a list of input tensors, got {type_name(inputs)}")
    tensors: dict[str, dict] = {}
    for i, tensor in enumerate(inputs):
        name = tensor.get("name") if isinstance(tensor, dict) else None
        if name not in INPUT_TYPES:
            raise invalid(f"inputs[{i}].name", f"expected one of {', '.join(INPUT_TYPES)}, got {name!r:.60}")
        if name in tensors:
            raise invalid(f"inputs[{i}].name", f"input {name!r} is given twice")
        if tensor.get("datatype") != INPUT_TYPES[name]:
            raise invalid(f"{name}.datatype", f"expected {INPUT_TYPES[name]}, got {tensor.get('datatype')!r:.60}")
        _shape(tensor, name)
        tensors[name] = tensor
    for name in ("images", "prompts"):
        if name not in tensors:
            raise invalid("inputs", f"the required input {name!r} is missing; send images (UINT8) and prompts (BYTES)")
    return tensors


def _binary_parts(tensors: dict[str, dict], inputs: list, binary: memoryview) -> dict[str, memoryview]:
    """Each input's slice of the binary tensor data, in the order of the request's inputs."""
    parts: dict[str, memoryview] = {}
    offset = 0
    for tensor in inputs:
        name = tensor["name"]
        parameters = tensor.get("parameters")
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise invalid(f"{name}.parameters.binary_data_size", f"expected a non-negative integer, got {size!r:.60}")
        if "data" in tensors[name]:
            raise invalid(f"{name}.data", "an input with binary_data_size must not also have JSON 'data'")
        parts[name] = binary[offset : offset + size]
        offset += size
    if offset != len(binary):
        raise ContractError(
            "bad_body",
            f"the binary tensor data holds {len(binary)} bytes but the inputs' binary_data_size add up to {offset}",
        )
    return parts


def _uint8_images(tensor: dict, part: memoryview | None, limits: Limits) -> memoryview:
    """The images' bytes, row-major: the binary part as is, or the JSON data (flat or nested) checked and packed."""
    shape = tensor["shape"]
    if part is not None:
        return part
    if shape[0] > limits.max_images or math.prod(shape[1:3]) > limits.max_pixels or shape[3] != 3:
        return memoryview(b"")  # the contract's checks name what is wrong with this shape
    try:
        array = np.array(tensor.get("data"))
    except (ValueError, TypeError):
        raise invalid("images.data", "expected a flat or nested list of integers 0..255 (a ragged list?)") from None
    if array.size and (array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 255):
        raise invalid("images.data", f"expected integers 0..255 for UINT8, got {array.dtype.name} values")
    if array.size != math.prod(shape):
        raise invalid("images.data", f"holds {array.size} values but shape {shape} needs {math.prod(shape)}")
    return memoryview(array.astype(np.uint8).tobytes())


def _flat(data: Any) -> Iterator[Any]:
    if isinstance(data, list):
        for item in data:
            yield from _flat(item)
    else:
        yield data


def _byte_elements(name: str, part: memoryview | None, tensor: dict) -> list[bytes | str]:
    """A BYTES tensor's elements: length-prefixed from the binary part, or the JSON data's strings."""
    count = math.prod(tensor["shape"])
    if part is None:
        data = tensor.get("data")
        elements = list(_flat(data)) if isinstance(data, list) else None
        if elements is None or not all(isinstance(e, str) for e in elements):
            raise invalid(f"{name}.data", f"expected a list of {count} strings, got {type_name(data)}")
    else:
        elements, offset = [], 0
        while offset < len(part):
            if offset + 4 > len(part):
                raise invalid(f"{name}.data", f"binary BYTES data ends inside a length prefix at byte {offset}")
            (length,) = _LENGTH.unpack_from(part, offset)
            if offset + 4 + length > len(part):
                raise invalid(f"{name}.data", f"element {len(elements)} declares {length} bytes past the data's end")
            elements.append(bytes(part[offset + 4 : offset + 4 + length]))
            offset += 4 + length
    if len(elements) != count:
        raise invalid(f"{name}.data", f"holds {len(elements)} elements but shape {tensor['shape']} needs {count}")
    return elements


def _text(element: bytes | str, field: str) -> str:
    if isinstance(element, str):
        return element
    try:
        return element.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise invalid(field, f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _metadata_entry(element: bytes | str, field: str, limits: Limits) -> dict | None:
    """One metadata element: JSON text of an object, or "" / "null" for none."""
    text = _text(element, field)
    if not text.strip():
        return None
    try:
        value = parse_body(text.encode("utf-8"), JSON, limits)
    except ContractError as err:
        raise invalid(field, err.message.replace("body is not valid JSON", "not valid JSON")) from None
    if value is not None and not isinstance(value, dict):
        raise invalid(field, f"expected the JSON text of an object, or '' for none, got {type_name(value)}")
    return value


def _requested_outputs(header: dict, outputs: list[str]) -> list[tuple[str, bool]]:
    requested = header.get("outputs")
    if requested is None:
        binary = _bool_parameter(header.get("parameters"), "binary_data_output", "request")
        return [(name, binary) for name in outputs]
    if not isinstance(requested, list):
        raise invalid("outputs", f"expected a list of requested outputs, got {type_name(requested)}")
    chosen = []
    for i, output in enumerate(requested):
        name = output.get("name") if isinstance(output, dict) else None
        if name not in outputs:
            raise invalid(f"outputs[{i}].name", f"expected one of {', '.join(outputs)}, got {name!r:.60}")
        chosen.append((name, _bool_parameter(output.get("parameters"), "binary_data", f"outputs[{i}]")))
    return chosen


def decode_infer(body: memoryview, header_length: str | None, limits: Limits, outputs: list[str]) -> InferRequest:
    """An infer request body as the contract request; raises ContractError naming the input and what is wrong."""
    json_part, binary = split_body(body, header_length)
    header = parse_body(json_part, JSON, limits)
    tensors = _input_tensors(header)
    parts = _binary_parts(tensors, header["inputs"], binary)
    request_id = header.get("id", "")
    images = tensors["images"]
    data = _uint8_images(images, parts.get("images"), limits)
    prompt_elements = _byte_elements("prompts", parts.get("prompts"), tensors["prompts"])
    prompts = [_text(p, f"prompts[{i}]") for i, p in enumerate(prompt_elements)]
    value: dict[str, Any] = {
        "version": 1,
        "id": request_id,
        "images": {"format": "raw", "dtype": "uint8", "shape": images["shape"], "data": data},
        "prompts": prompts,
    }
    if "metadata" in tensors:
        elements = _byte_elements("metadata", parts.get("metadata"), tensors["metadata"])
        value["metadata"] = [_metadata_entry(e, f"metadata[{i}]", limits) for i, e in enumerate(elements)]
    request = request_from_value(value, limits)
    return InferRequest(request, _requested_outputs(header, outputs))


def _output_values(name: str, outcome: Outcome) -> tuple[str, list]:
    """An output's datatype and its N values (None for a failed item's score)."""
    if name == ERRORS_OUTPUT:
        errors = outcome.errors
        texts = ["" if e is None else json.dumps({"code": e.code, "message": e.message}) for e in errors]
        return "BYTES", texts
    if name == DETAILS_OUTPUT:
        details = outcome.details or [None] * len(outcome.errors)
        return "BYTES", ["" if d is None else json.dumps(d, default=str) for d in details]
    return "FP64", outcome.scores[name]


def _binary_values(datatype: str, values: list) -> bytes:
    if datatype == "FP64":
        return np.array([math.nan if v is None else v for v in values], dtype="<f8").tobytes()
    encoded = [text.encode("utf-8") for text in values]
    return b"".join(_LENGTH.pack(len(e)) + e for e in encoded)


def encode_infer(
    infer: InferRequest, outcome: Outcome, head: dict[str, Any], parameters: dict[str, Any]
) -> tuple[bytes, int | None]:
    """The infer response body, and the length of its JSON header when binary outputs follow it (else None)."""
    outputs, blobs = [], []
    for name, binary in infer.outputs:
        datatype, values = _output_values(name, outcome)
        tensor: dict[str, Any] = {"name": name, "datatype": datatype, "shape": [len(values)]}
        if binary:
            blob = _binary_values(datatype, values)
            tensor["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            tensor["data"] = values
        outputs.append(tensor)
    if infer.request.id:
        head = {**head, "id": infer.request.id}
    text = json.dumps({**head, "parameters": parameters, "outputs": outputs}, allow_nan=False).encode("utf-8")
    if not blobs:
        return text, None
    return b"".join([text, *blobs]), len(text)
