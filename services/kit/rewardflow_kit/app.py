"""The FastAPI app factory: /v1/score through the micro-batcher, plus info, health, metrics and the Open
Inference Protocol (rewardflow_kit.oip).

/v1/score, /v1/info, /v2/models/* and (when REWARDFLOW_DOCS is on) /docs, /redoc, /openapi.json need the
API key, checked by one dependency (`replies.require_api_key`); errors leave as the contract's error body
(on /v2 paths as OIP's `{"error": ...}`, see oip.py).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
from fastapi import Depends, FastAPI, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from rewardflow_proto import (
    JSON,
    MSGPACK,
    VERSION,
    ContractError,
    Limits,
    ScoreRequest,
    ScoreResponse,
    decode_request,
    encode_response,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from rewardflow_kit.batcher import MicroBatcher, ModelThread, QueueFull
from rewardflow_kit.body import CLIENT_CLOSED_REQUEST, BodyGate, ClientGone, receive_body
from rewardflow_kit.faults import FaultInjection, fault_file
from rewardflow_kit.idempotency import RecentAnswers, body_digest
from rewardflow_kit.images import Admitted, PixelLimits, pixel_chunks, request_pixels, working_size_of
from rewardflow_kit.metrics import ScoreRequestMetrics, ServiceMetrics
from rewardflow_kit.oip import add_oip_routes, oip_exception_handlers
from rewardflow_kit.replies import (
    contract_error,
    error_response,
    reply_type,
    request_media_type,
    require_api_key,
    response_type,
    route_error,
)
from rewardflow_kit.scorer import Batch, InvalidRequest, Scorer, validate_request
from rewardflow_kit.scoring import Outcome, encodable, score_requests
from rewardflow_kit.settings import ServiceSettings

log = logging.getLogger("rewardflow_kit")

# The dependency list of every route that needs the API key (when one is set).
NEEDS_KEY = [Depends(require_api_key)]


def warmup_batch(scorer: Scorer) -> Batch:
    """The scorer's own warm-up batch if it defines `warmup_batch()`, else one grey 64x64 image."""
    custom = getattr(scorer, "warmup_batch", None)
    if callable(custom):
        return custom()
    image = np.full((64, 64, 3), 127, dtype=np.uint8)
    image.flags.writeable = False
    return Batch(images=[image], prompts=["a photo of a cat"], metadata=[{}], group_ids=[None])


class ServiceState:
    """Everything one app instance owns: scorer, settings, metrics, readiness, batcher, model thread."""

    def __init__(self, scorer: Scorer, settings: ServiceSettings) -> None:
        self.scorer = scorer
        self.settings = settings
        self.metrics = ServiceMetrics(scorer.name)
        requested = settings.max_batch_size or scorer.max_batch_size
        if requested > scorer.max_batch_size:
            log.warning(
                "REWARDFLOW_MAX_BATCH_SIZE=%d exceeds scorer %s's max_batch_size %d; using %d",
                requested, scorer.name, scorer.max_batch_size, scorer.max_batch_size,
            )  # fmt: skip
        self.max_batch_size = min(requested, scorer.max_batch_size)
        self.limits = Limits(max_images=self.max_batch_size, max_pixels=settings.max_image_pixels)
        self.pixels = pixel_limits(settings)
        self.working_size = working_size_of(scorer)
        self.body_gate = BodyGate(settings.max_inflight_bodies, self.metrics.receiving_bodies_now.set)
        self.answers = RecentAnswers(
            settings.answer_cache_size, settings.answer_cache_ttl_s, self.metrics.repeated_requests_now.inc
        )
        api_key = settings.api_key.get_secret_value() if settings.api_key is not None else ""
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.ready = False
        self.load_error: str | None = None
        self.load_failure: str | None = None
        """The one line a service that cannot load exits with: '<service>: <cause>' (and what to run)."""
        self.on_load_failure: Callable[[], None] = lambda: None
        self.model_thread: ModelThread | None = None
        self.batcher: MicroBatcher[Admitted, Outcome] | None = None

    def load_and_warm_up(self) -> None:
        """Runs in the model thread: load() then one warm-up batch through score()."""
        started = time.perf_counter()
        self.scorer.load()
        loaded = time.perf_counter()
        self.scorer.score(warmup_batch(self.scorer))
        log.info(
            "%s ready: load %.2f s, warm-up %.2f s", self.scorer.name, loaded - started, time.perf_counter() - loaded
        )

    async def load(self) -> None:
        assert self.model_thread is not None
        try:
            await asyncio.get_running_loop().run_in_executor(self.model_thread, self.load_and_warm_up)
        except Exception as exc:
            self.load_error = load_error_text(exc, self.scorer.name)
            self.load_failure = f"{self.scorer.name}: {self.load_error}"
            if self.settings.stay_up_on_load_error:
                # Stay up with /readyz 503 and the reason, so probes and `curl /readyz` show why.
                log.exception("loading scorer %s failed; /readyz stays 503", self.scorer.name)
            else:
                log.debug("loading scorer %s failed", self.scorer.name, exc_info=True)
                self.on_load_failure()  # the server stops and exits with the one line (server.run)
        else:
            self.ready = True

    def run_batch(self, admitted: list[Admitted]) -> list[Outcome]:
        """Runs in the model thread: the merged requests in model calls of at most max_batch_pixels each."""
        outcomes: list[Outcome] = []
        for start, end in pixel_chunks([a.pixels for a in admitted], self.pixels.per_batch):
            requests = [a.request for a in admitted[start:end]]
            self.metrics.batch_size_now.observe(sum(len(r) for r in requests))
            outcomes += score_requests(self.scorer, requests, self.limits.max_pixels, self.working_size)
        self.metrics.images_scored_now.inc(sum(o.n_scored for o in outcomes))
        return outcomes

    def authorized(self, request: Request) -> bool:
        if self.api_key is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        # Starlette decodes headers as latin-1, so this gives back the bytes the client sent.
        given = token.strip().encode("latin-1", "replace")
        return scheme.lower() == "bearer" and hmac.compare_digest(given, self.api_key)

    def info(self) -> dict:
        s = self.scorer
        return {
            "name": s.name,
            "version": s.version,
            "model": s.model_id,
            "device": s.device,
            "score_keys": list(s.score_keys),
            "score_range": {k: list(v) for k, v in s.score_range.items()},
            "max_batch_size": self.max_batch_size,
            "max_body_bytes": self.settings.max_body_bytes,
            "body_timeout_s": self.settings.body_timeout_s,
            "max_inflight_bodies": self.settings.max_inflight_bodies,
            "max_prompt_chars": self.limits.max_prompt_chars,
            "max_image_pixels": self.pixels.per_image,
            "max_request_pixels": self.pixels.per_request,
            "max_batch_pixels": self.pixels.per_batch,
            "working_size": self.working_size,
            "answer_cache_size": self.settings.answer_cache_size,
            "answer_cache_ttl_s": self.settings.answer_cache_ttl_s,
            "contract_version": VERSION,
        }

    def not_ready_error(self) -> ContractError:
        if self.load_error is not None:
            return ContractError("not_ready", f"service {self.scorer.name} failed to load: {self.load_error}")
        return ContractError("not_ready", f"service {self.scorer.name} is still loading its model; retry shortly")


def load_error_text(exc: BaseException, service: str) -> str:
    """Why a model failed to load, in one line: the message with newlines folded, after the exception's type
    unless it is a one-line error of ours that says which model is missing (rewardflow_vision's ModelNotCached),
    which also gets the command that fills the cache."""
    message = " ".join(str(exc).split())
    if getattr(exc, "missing_model", False):
        return f"{message} (run `rewardflow models pull {service}` where the hub is reachable)"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def pixel_limits(settings: ServiceSettings) -> PixelLimits:
    """The pixel budgets of the settings; a model call must hold at least one whole request."""
    per_batch = settings.max_batch_pixels
    if per_batch < settings.max_request_pixels:
        log.warning(
            "REWARDFLOW_MAX_BATCH_PIXELS=%d is below REWARDFLOW_MAX_REQUEST_PIXELS=%d; using %d",
            per_batch, settings.max_request_pixels, settings.max_request_pixels,
        )  # fmt: skip
        per_batch = settings.max_request_pixels
    return PixelLimits(settings.max_image_pixels, settings.max_request_pixels, per_batch)


def with_batch_hint(err: ContractError, state: ServiceState) -> ContractError:
    """A decoder's error, with this service's max_batch_size named when the batch is too large."""
    if err.code == "too_large" and err.field == "prompts":
        message = f"{err.message}: this service's max_batch_size is {state.max_batch_size}; split the batch"
        return ContractError("too_large", message, err.field)
    return err


def admit(state: ServiceState, body: memoryview, content_type: str) -> tuple[Admitted, bytes]:
    """Every whole-request check, in a worker thread (each step grows with the input): decode, the scorer's
    `validate`, the images' declared pixels; with the body's hash when its id is remembered (idempotency.py).
    Raises ContractError."""
    try:
        request = decode_request(body, content_type, state.limits)
    except ContractError as err:
        raise with_batch_hint(err, state) from None
    admitted = admit_request(state, request)
    return admitted, body_digest(body) if state.answers.remembers(request.id) else b""


def admit_request(state: ServiceState, request: ScoreRequest) -> Admitted:
    """The checks after decoding (also for OIP's infer): the scorer's `validate`, the images' declared pixels."""
    try:
        metadata = request.metadata or [None] * len(request)
        validate_request(state.scorer, request.prompts, [m or {} for m in metadata])
    except InvalidRequest as exc:
        raise ContractError("invalid_request", str(exc), exc.field) from None
    return Admitted(request, request_pixels(request, state.pixels))


async def handle_score(state: ServiceState, request: Request, received: float) -> Response:
    """POST /v1/score (the API key already checked): content type, readiness, bounded body, decode, queue, respond."""
    request_type = request_media_type(request)
    reply_type = response_type(request, request_type)
    retry_after = state.settings.retry_after_s
    try:
        if request_type not in (MSGPACK, JSON):
            raise ContractError(
                "unsupported_media_type",
                f"content type {request_type or '(none)'!r} is not supported; send {MSGPACK} or {JSON}",
            )
        if not state.ready or state.batcher is None:
            raise state.not_ready_error()
        settings = state.settings
        body = await receive_body(request, settings.max_body_bytes, settings.body_timeout_s, state.body_gate)
        admitted, digest = await asyncio.to_thread(admit, state, body, request_type)
        del body
        score = functools.partial(scored_response, state, admitted, received)
        response = await state.answers.answer(admitted.request.id, digest, score)
    except ContractError as err:
        return error_response(err, reply_type, retry_after)
    return Response(encode_response(response, reply_type), media_type=reply_type)


async def scored_response(state: ServiceState, admitted: Admitted, received: float) -> ScoreResponse:
    """The request through the micro-batcher, as the contract's response; raises ContractError when the queue is
    full."""
    assert state.batcher is not None
    score_request = admitted.request
    try:
        timed = await state.batcher.submit(admitted, len(score_request))
    except QueueFull as exc:
        raise ContractError("overloaded", f"service {state.scorer.name} is busy: {exc}; retry later") from None
    outcome = timed.value
    return ScoreResponse(
        scores=outcome.scores,
        errors=outcome.errors,
        details=outcome.details,
        id=encodable(score_request.id),
        service=state.scorer.name,
        model=state.scorer.model_id,
        model_version=state.scorer.version,
        timing={
            "queue_ms": timed.queue_s * 1000,
            "compute_ms": timed.compute_s * 1000,
            "total_ms": (time.perf_counter() - received) * 1000,
        },
    )


def create_app(scorer: Scorer, settings: ServiceSettings | None = None) -> FastAPI:
    """A FastAPI app serving `scorer`; the model loads in the background when the app starts."""
    settings = settings if settings is not None else ServiceSettings()
    if settings.device:
        scorer.device = settings.device
    if settings.model:
        scorer.model_id = settings.model
    state = ServiceState(scorer, settings)
    metrics = state.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.model_thread = ModelThread(f"rewardflow-{scorer.name}-model")
        state.batcher = MicroBatcher(
            state.run_batch,
            state.model_thread,
            max_batch_size=state.max_batch_size,
            max_queue_delay_s=settings.max_queue_delay_ms / 1000,
            max_queue_size=settings.max_queue_size,
            on_depth=metrics.queue_depth_now.set,
        )
        state.batcher.start()
        loading = asyncio.get_running_loop().create_task(state.load(), name="rewardflow-load")
        try:
            yield
        finally:
            loading.cancel()
            await state.batcher.stop()
            state.model_thread.shutdown(wait=False)

    app = FastAPI(
        title=f"rewardflow {scorer.name}",
        version=scorer.version,
        lifespan=lifespan,
        # Off by default; add_docs serves them behind the API key when REWARDFLOW_DOCS is on.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        exception_handlers=oip_exception_handlers(
            {Exception: internal_error, ContractError: contract_error, StarletteHTTPException: route_error}
        ),
    )
    app.state.rewardflow = state
    if (faults := fault_file()) is not None:  # tests and bench/faults.py only; added first: inside the metrics
        app.add_middleware(FaultInjection, metrics=metrics, path=faults, score_keys=tuple(scorer.score_keys))
    app.add_middleware(ScoreRequestMetrics, metrics=metrics)
    add_service_routes(app, state)
    add_oip_routes(app, state)
    if settings.docs:
        add_docs(app)
    return app


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"version": VERSION, "error": {"code": "internal", "message": str(exc)}}, 500)


def readiness(state: ServiceState) -> JSONResponse:
    """/readyz: 200 once loaded and warmed up, else 503 with the reason and Retry-After."""
    if state.ready:
        return JSONResponse({"status": "ready"})
    body = {"status": "failed" if state.load_error else "loading", "error": state.not_ready_error().message}
    return JSONResponse(body, 503, headers={"Retry-After": str(state.settings.retry_after_s)})


def add_service_routes(app: FastAPI, state: ServiceState) -> None:
    """/v1/score, /v1/info, the health probes and /metrics."""

    @app.post("/v1/score", dependencies=NEEDS_KEY)
    async def score(request: Request) -> Response:
        received = time.perf_counter()
        reply = JSON
        try:
            reply = reply_type(request)
            return await handle_score(state, request, received)
        except ClientGone as gone:
            # Nobody is left to answer; the status only labels the request in the metrics.
            log.info("POST /v1/score: %s; nothing answered (counted as %d)", gone, CLIENT_CLOSED_REQUEST)
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        except Exception as exc:
            log.exception("unhandled error while scoring")
            return error_response(ContractError("internal", f"internal error: {type(exc).__name__}"), reply, 1)

    @app.get("/healthz")
    @app.get("/v2/health/live")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @app.get("/readyz")
    @app.get("/v2/health/ready")
    async def readyz() -> JSONResponse:
        return readiness(state)

    @app.get("/v1/info", dependencies=NEEDS_KEY)
    async def info() -> JSONResponse:
        return JSONResponse(state.info())

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(state.metrics.render(), media_type=state.metrics.content_type)


def add_docs(app: FastAPI) -> None:
    """/openapi.json, /docs (Swagger UI) and /redoc, behind the API key like /v1/info."""

    @app.get("/openapi.json", include_in_schema=False, dependencies=NEEDS_KEY)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=NEEDS_KEY)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    @app.get("/redoc", include_in_schema=False, dependencies=NEEDS_KEY)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")
