"""How the kit answers with the contract's error body: reply formats, the API-key dependency, exception handlers.

Every whole-request failure, from a handler, the API-key check or the router (unknown path 404 `not_found`,
wrong method 405 `method_not_allowed`), leaves as `{version, error: {code, message, field?}}` in msgpack or
JSON (proto/README.md §4), never as FastAPI's `{"detail": ...}`.
"""

from __future__ import annotations

from fastapi import Request, Response
from fastapi.exception_handlers import http_exception_handler
from rewardflow_proto import JSON, MSGPACK, ContractError, encode_error, media_type
from starlette.exceptions import HTTPException as StarletteHTTPException

from rewardflow_kit.scoring import encodable

_MSGPACK_ALIASES = {MSGPACK, "application/x-msgpack", "application/vnd.msgpack"}
_ROUTE_ERRORS = {404: "not_found", 405: "method_not_allowed"}


def request_media_type(request: Request) -> str:
    """The body's media type, with the msgpack aliases some clients send mapped to application/msgpack."""
    kind = media_type(request.headers.get("content-type"))
    return MSGPACK if kind in _MSGPACK_ALIASES else kind


def response_type(request: Request, request_type: str) -> str:
    """The request's own format unless Accept names exactly one of msgpack and JSON."""
    accept = request.headers.get("accept", "").lower()
    wants_msgpack = any(alias in accept for alias in _MSGPACK_ALIASES)
    wants_json = JSON in accept
    if wants_msgpack and not wants_json:
        return MSGPACK
    if wants_json and not wants_msgpack:
        return JSON
    return request_type if request_type in (MSGPACK, JSON) else JSON


def reply_type(request: Request) -> str:
    """The format of this request's reply: its Accept header, else its body's format, else JSON."""
    return response_type(request, request_media_type(request))


def error_response(err: ContractError, content_type: str, retry_after_s: int) -> Response:
    headers: dict[str, str] = {}
    if err.code in ("overloaded", "not_ready"):
        headers["Retry-After"] = str(retry_after_s)
    if err.code == "unauthorized":
        headers["WWW-Authenticate"] = 'Bearer realm="rewardflow"'
    if err.code == "request_timeout":
        headers["Connection"] = "close"  # the rest of the body may still come: the connection cannot be reused
    # The message or field may quote client text, e.g. a lone surrogate from a JSON body.
    safe = ContractError(err.code, encodable(err.message), None if err.field is None else encodable(err.field))
    body = encode_error(safe.to_body(), content_type)
    return Response(body, status_code=err.status, media_type=content_type, headers=headers)


def require_api_key(request: Request) -> None:
    """The one API-key check, a FastAPI dependency of every guarded route: 401 `unauthorized` on a mismatch."""
    if not request.app.state.rewardflow.authorized(request):
        raise ContractError("unauthorized", "missing or wrong API key; send 'Authorization: Bearer <key>'")


async def contract_error(request: Request, exc: Exception) -> Response:
    """A ContractError raised outside a handler's own try (the API-key dependency) as the error body."""
    assert isinstance(exc, ContractError)
    return error_response(exc, reply_type(request), request.app.state.rewardflow.settings.retry_after_s)


async def route_error(request: Request, exc: Exception) -> Response:
    """The router's 404 (no such path) and 405 (path without that method) as the contract's error body."""
    assert isinstance(exc, StarletteHTTPException)
    code = _ROUTE_ERRORS.get(exc.status_code)
    if code is None:
        return await http_exception_handler(request, exc)
    where = f"{request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if code == "not_found":
        message = f"{where}: no such endpoint (POST /v1/score, GET /v1/info, /healthz, /readyz, /metrics, /v2/...)"
    else:
        allowed = next((value for key, value in headers.items() if key.lower() == "allow"), "other methods")
        message = f"{where}: method not allowed; {request.url.path} answers {allowed}"
    response = error_response(ContractError(code, message), reply_type(request), 1)
    response.headers.update(headers)  # Allow, on a 405
    return response
