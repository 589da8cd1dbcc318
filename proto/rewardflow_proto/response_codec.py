"""Responses and error bodies: typed messages to plain values and back, validated (client side)."""

from __future__ import annotations

import math
from typing import Any

from rewardflow_proto.errors import ContractError
from rewardflow_proto.errors import type_name as _type_name
from rewardflow_proto.messages import VERSION, ErrorBody, ItemError, ScoreResponse
from rewardflow_proto.request_codec import check_version as _check_version


def _score_value(value: Any, field: str) -> float | None:
    if value is None:
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{field} is {number}: a non-finite score must be sent as an item error, not a number")
    return number


def response_to_value(response: ScoreResponse) -> dict:
    """The response as plain values in canonical key order; scores and timings become float64."""
    value: dict[str, Any] = {
        "version": response.version,
        "id": response.id,
        "service": response.service,
        "model": response.model,
        "model_version": response.model_version,
        "scores": {
            key: [_score_value(v, f"scores.{key}[{i}]") for i, v in enumerate(values)]
            for key, values in response.scores.items()
        },
        "errors": [None if e is None else {"code": e.code, "message": e.message} for e in response.errors],
    }
    if response.details is not None:
        value["details"] = list(response.details)
    value["timing"] = {key: float(v) for key, v in response.timing.items()}
    return value


def _bad_response(field: str, message: str) -> ContractError:
    return ContractError("bad_body", f"response {field}: {message}", field)


def _response_number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _bad_response(field, f"expected a finite number, got {value!r:.60}")
    return float(value)


def _response_text(msg: dict, key: str) -> str:
    value = msg.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad_response(key, f"expected a string, got {_type_name(value)}")
    return value


def _response_errors(value: Any) -> list[ItemError | None]:
    if not isinstance(value, list):
        raise _bad_response("errors", f"expected a list with one entry per item, got {_type_name(value)}")
    errors: list[ItemError | None] = []
    for i, e in enumerate(value):
        if e is None:
            errors.append(None)
        elif isinstance(e, dict) and isinstance(e.get("code"), str) and isinstance(e.get("message", ""), str):
            errors.append(ItemError(code=e["code"], message=e.get("message", "")))
        else:
            raise _bad_response(f"errors[{i}]", f"expected nil or a map with string code and message, got {e!r:.80}")
    return errors


def response_from_value(msg: Any) -> ScoreResponse:
    """Validate a parsed response body (client side); an error body raises its ContractError."""
    if not isinstance(msg, dict):
        raise _bad_response("body", f"expected a map, got {_type_name(msg)}")
    if "error" in msg:
        err = error_from_value(msg)
        raise ContractError(err.code, err.message, err.field)
    _check_version(msg, bad_code="bad_body")
    errors = _response_errors(msg.get("errors"))
    n = len(errors)
    scores_v = msg.get("scores")
    if not isinstance(scores_v, dict):
        raise _bad_response("scores", f"expected a map of score lists, got {_type_name(scores_v)}")
    scores: dict[str, list[float | None]] = {}
    for key, values in scores_v.items():
        if not isinstance(key, str) or not isinstance(values, list) or len(values) != n:
            raise _bad_response(f"scores.{key}", f"expected a list of {n} numbers or nils")
        scores[key] = [None if v is None else _response_number(v, f"scores.{key}[{i}]") for i, v in enumerate(values)]
    details = msg.get("details")
    if details is not None:
        if not isinstance(details, list) or len(details) != n:
            raise _bad_response("details", f"expected a list of {n} entries or nil")
        for i, d in enumerate(details):
            if d is not None and not isinstance(d, dict):
                raise _bad_response(f"details[{i}]", f"expected a map or nil, got {_type_name(d)}")
    timing_v = msg.get("timing") or {}
    if not isinstance(timing_v, dict):
        raise _bad_response("timing", f"expected a map of numbers, got {_type_name(timing_v)}")
    timing = {str(k): _response_number(v, f"timing.{k}") for k, v in timing_v.items()}
    return ScoreResponse(
        scores=scores,
        errors=errors,
        details=details,
        id=_response_text(msg, "id"),
        service=_response_text(msg, "service"),
        model=_response_text(msg, "model"),
        model_version=_response_text(msg, "model_version"),
        timing=timing,
    )


def error_to_value(error: ErrorBody) -> dict:
    """The error body as plain values in canonical key order."""
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.field is not None:
        body["field"] = error.field
    return {"version": error.version, "error": body}


def error_from_value(msg: Any) -> ErrorBody:
    """Validate a parsed error body; a malformed one is a `bad_body` ContractError."""
    body = msg.get("error") if isinstance(msg, dict) else None
    if not isinstance(body, dict):
        raise _bad_response("error", "expected an error body {version, error: {code, message, field?}}")
    code, message, field = body.get("code"), body.get("message", ""), body.get("field")
    if not isinstance(code, str) or not isinstance(message, str) or not (field is None or isinstance(field, str)):
        raise _bad_response("error", f"expected string code, message and field, got {body!r:.120}")
    version = msg.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int):
        raise _bad_response("version", f"expected an integer, got {version!r:.60}")
    return ErrorBody(code=code, message=message, field=field, version=version)
