"""The Open Inference Protocol (KServe v2 / Triton HTTP) for a service's one model, next to /v1/score.

GET /v2 (server metadata), /v2/models/{name}[/versions/{version}] (metadata), .../ready, .../config (Triton's
model configuration) and POST .../infer: inputs `images` (UINT8 [N, H, W, 3]), `prompts` (BYTES [N]) and optional
`metadata` (BYTES [N], JSON text), outputs one FP64 [N] per score key plus `errors` and `details` (BYTES [N]).
Infer goes through the same body limits, contract validation, scorer validation, pixel budgets and micro-batcher
as /v1/score. Every failure on a /v2 path, the router's 404/405 and the API-key check included, answers OIP's
`{"error": "<message>"}` (with the contract's `code` alongside), the body Triton and KServe clients decode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import metadata as package_metadata
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from rewardflow_proto import JSON, ContractError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rewardflow_kit.batcher import QueueFull
from rewardflow_kit.body import CLIENT_CLOSED_REQUEST, ClientGone, receive_body
from rewardflow_kit.oip_tensors import DETAILS_OUTPUT, ERRORS_OUTPUT, InferRequest, decode_infer, encode_infer
from rewardflow_kit.replies import error_response, require_api_key

if TYPE_CHECKING:
    from rewardflow_kit.app import ServiceState
    from rewardflow_kit.images import Admitted

log = logging.getLogger("rewardflow_kit")

NEEDS_KEY = [Depends(require_api_key)]
EXTENSIONS = ["binary_tensor_data", "model_configuration"]
HEADER_LENGTH = "Inference-Header-Content-Length"
Handler = Callable[[Request, Exception], Awaitable[Response]]


def is_oip_path(request: Request) -> bool:
    """Whether the request is on the protocol's paths (/v2 and below), which answer OIP error bodies."""
    path = request.url.path
    return path == "/v2" or path.startswith("/v2/")


def oip_error(err: ContractError, retry_after_s: int) -> JSONResponse:
    """`err` as OIP's error body, with the contract's status and headers (Retry-After, WWW-Authenticate)."""
    headers = {
        key: value
        for key, value in error_response(err, JSON, retry_after_s).headers.items()
        if key.lower() not in ("content-length", "content-type")
    }
    return JSONResponse({"error": err.message, "code": err.code}, err.status, headers=headers)


def _route_error(request: Request, exc: StarletteHTTPException) -> Response:
    where = f"{request.method} {request.url.path}"
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        err = ContractError("not_found", f"{where}: no such endpoint of the Open Inference Protocol here")
    elif exc.status_code == 405:
        allowed = next((value for key, value in headers.items() if key.lower() == "allow"), "other methods")
        err = ContractError("method_not_allowed", f"{where}: method not allowed; {request.url.path} answers {allowed}")
    else:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=headers)
    response = oip_error(err, 1)
    response.headers.update(headers)  # Allow, on a 405
    return response


def with_oip_errors(handler: Handler) -> Handler:
    """An exception handler that answers OIP's error body on /v2 paths and defers to `handler` elsewhere."""

    async def handle(request: Request, exc: Exception) -> Response:
        if not is_oip_path(request):
            return await handler(request, exc)
        retry_after = request.app.state.rewardflow.settings.retry_after_s
        if isinstance(exc, ContractError):
            return oip_error(exc, retry_after)
        if isinstance(exc, StarletteHTTPException):
            return _route_error(request, exc)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return oip_error(ContractError("internal", f"internal error: {type(exc).__name__}"), retry_after)

    return handle


def oip_exception_handlers(handlers: dict[Any, Handler]) -> dict[Any, Handler]:
    """The app's exception handlers, each answering OIP's error body on /v2 paths."""
    return {kind: with_oip_errors(handler) for kind, handler in handlers.items()}


def server_metadata() -> dict[str, Any]:
    """GET /v2: the server's name, version and the protocol extensions it supports."""
    try:
        version = package_metadata.version("rewardflow-kit")
    except package_metadata.PackageNotFoundError:
        version = "0"
    return {"name": "rewardflow", "version": version, "extensions": EXTENSIONS}


def output_names(state: ServiceState) -> list[str]:
    return [*state.scorer.score_keys, ERRORS_OUTPUT, DETAILS_OUTPUT]


def model_metadata(state: ServiceState) -> dict[str, Any]:
    """OIP model metadata: name, versions, the inputs it takes and the outputs it sends, /v1/info as parameters."""
    scorer = state.scorer
    outputs = [{"name": key, "datatype": "FP64", "shape": [-1]} for key in scorer.score_keys]
    return {
        "name": scorer.name,
        "versions": [scorer.version],
        "platform": "rewardflow",
        "inputs": [
            {"name": "images", "datatype": "UINT8", "shape": [-1, -1, -1, 3]},
            {"name": "prompts", "datatype": "BYTES", "shape": [-1]},
            {"name": "metadata", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            *outputs,
            {"name": ERRORS_OUTPUT, "datatype": "BYTES", "shape": [-1]},
            {"name": DETAILS_OUTPUT, "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": state.info(),
    }


def model_config(state: ServiceState) -> dict[str, Any]:
    """Triton's model configuration (what tritonclient's get_model_config reads); dims exclude the batch axis."""
    scorer = state.scorer
    scalar = {"dims": [1], "reshape": {"shape": []}}  # one value per item: [N] on the wire

    def tensor(name: str, data_type: str, **more: Any) -> dict[str, Any]:
        return {"name": name, "data_type": data_type, **more}

    return {
        "name": scorer.name,
        "platform": "rewardflow",
        "backend": "rewardflow",
        "max_batch_size": state.max_batch_size,
        "input": [
            tensor("images", "TYPE_UINT8", dims=[-1, -1, 3]),
            tensor("prompts", "TYPE_STRING", **scalar),
            tensor("metadata", "TYPE_STRING", optional=True, **scalar),
        ],
        "output": [tensor(name, "TYPE_FP64", **scalar) for name in scorer.score_keys]
        + [tensor(name, "TYPE_STRING", **scalar) for name in (ERRORS_OUTPUT, DETAILS_OUTPUT)],
        "dynamic_batching": {
            "max_queue_delay_microseconds": int(state.settings.max_queue_delay_ms * 1000),
            "default_queue_policy": {"max_queue_size": state.settings.max_queue_size},
        },
        "version_policy": {"specific": {"versions": [scorer.version]}},
    }


def check_model(state: ServiceState, name: str, version: str | None = None) -> None:
    """404 `not_found` unless `name` (and `version`, when given) is this service's model."""
    scorer = state.scorer
    if name != scorer.name:
        raise ContractError("not_found", f"no model named {name!r}; this service serves {scorer.name!r}", "name")
    if version is not None and version != scorer.version:
        message = f"model {name!r} has no version {version!r}; this service serves version {scorer.version!r}"
        raise ContractError("not_found", message, "version")


def admit_infer(state: ServiceState, body: memoryview, header_length: str | None) -> tuple[InferRequest, Admitted]:
    """Decode and admit an infer body in a worker thread, with /v1/score's checks; raises ContractError."""
    from rewardflow_kit.app import admit_request, with_batch_hint  # app imports this module to add its routes

    try:
        decoded = decode_infer(body, header_length, state.limits, output_names(state))
    except ContractError as err:
        raise with_batch_hint(err, state) from None
    return decoded, admit_request(state, decoded.request)


async def infer(state: ServiceState, request: Request, received: float) -> Response:
    """POST /v2/models/{name}/infer (model and API key already checked): readiness, body, admit, queue, respond."""
    if not state.ready or state.batcher is None:
        raise state.not_ready_error()
    settings = state.settings
    body = await receive_body(request, settings.max_body_bytes, settings.body_timeout_s, state.body_gate)
    header_length = request.headers.get(HEADER_LENGTH)
    decoded, admitted = await asyncio.to_thread(admit_infer, state, body, header_length)
    del body
    try:
        timed = await state.batcher.submit(admitted, len(admitted.request))
    except QueueFull as exc:
        raise ContractError("overloaded", f"service {state.scorer.name} is busy: {exc}; retry later") from None
    timing = {
        "queue_ms": timed.queue_s * 1000,
        "compute_ms": timed.compute_s * 1000,
        "total_ms": (time.perf_counter() - received) * 1000,
    }
    head = {"model_name": state.scorer.name, "model_version": state.scorer.version}
    content, json_length = encode_infer(decoded, timed.value, head, timing)
    if json_length is None:
        return Response(content, media_type=JSON)
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(json_length)})


def add_oip_routes(app: FastAPI, state: ServiceState) -> None:
    """The protocol's server metadata, model metadata, readiness, configuration and inference."""
    from rewardflow_kit.app import readiness  # app imports this module to add its routes

    @app.get("/v2")  # open like /v2/health/*: a client's first call, it tells nothing about the model
    async def metadata_of_server() -> JSONResponse:
        return JSONResponse(server_metadata())

    @app.get("/v2/models/{name}", dependencies=NEEDS_KEY)
    @app.get("/v2/models/{name}/versions/{version}", dependencies=NEEDS_KEY)
    async def metadata_of_model(name: str, version: str | None = None) -> JSONResponse:
        check_model(state, name, version)
        return JSONResponse(model_metadata(state))

    @app.get("/v2/models/{name}/ready", dependencies=NEEDS_KEY)
    @app.get("/v2/models/{name}/versions/{version}/ready", dependencies=NEEDS_KEY)
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        check_model(state, name, version)
        return readiness(state)

    @app.get("/v2/models/{name}/config", dependencies=NEEDS_KEY)
    @app.get("/v2/models/{name}/versions/{version}/config", dependencies=NEEDS_KEY)
    async def config_of_model(name: str, version: str | None = None) -> JSONResponse:
        check_model(state, name, version)
        return JSONResponse(model_config(state))

    @app.post("/v2/models/{name}/infer", dependencies=NEEDS_KEY)
    @app.post("/v2/models/{name}/versions/{version}/infer", dependencies=NEEDS_KEY)
    async def infer_route(request: Request, name: str, version: str | None = None) -> Response:
        received = time.perf_counter()
        try:
            check_model(state, name, version)
            return await infer(state, request, received)
        except ContractError as err:
            return oip_error(err, state.settings.retry_after_s)
        except ClientGone as gone:
            log.info("POST %s: %s; nothing answered (counted as %d)", request.url.path, gone, CLIENT_CLOSED_REQUEST)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
