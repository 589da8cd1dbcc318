"""Prometheus metrics with the same names in every service, in one registry per app."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class ServiceMetrics:
    """The kit's metrics for one service; `service` is a label so one Prometheus can scrape them all."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, service: str) -> None:
        # A registry per app (not the global one) so several apps can live in one process (tests, bench).
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("service",)
        self.requests = Counter(
            "rewardflow_requests",
            "Score requests by HTTP status code; 499: the client disconnected before the answer.",
            (*labels, "code"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "rewardflow_request_latency_seconds",
            "Time from receiving a score request to sending its response.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "rewardflow_batch_size",
            "Images per model call, as realised by the micro-batcher.",
            labels,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "rewardflow_in_flight_requests", "Score requests being handled now.", labels, registry=self.registry
        )
        self.receiving_bodies = Gauge(
            "rewardflow_receiving_bodies",
            "Request bodies being received now (at most max_inflight_bodies).",
            labels,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "rewardflow_queue_depth", "Images waiting in the micro-batch queue.", labels, registry=self.registry
        )
        self.images_scored = Counter(
            "rewardflow_images_scored",
            "Images that got a score (per-item errors excluded).",
            labels,
            registry=self.registry,
        )
        self.repeated_requests = Counter(
            "rewardflow_repeated_requests",
            "Score requests answered with an earlier request's answer (a retry: same id, same body), not scored.",
            labels,
            registry=self.registry,
        )
        self.service = service
        self.in_flight_now = self.in_flight.labels(service)
        self.queue_depth_now = self.queue_depth.labels(service)
        self.receiving_bodies_now = self.receiving_bodies.labels(service)
        self.latency_now = self.latency.labels(service)
        self.batch_size_now = self.batch_size.labels(service)
        self.images_scored_now = self.images_scored.labels(service)
        self.repeated_requests_now = self.repeated_requests.labels(service)

    def count_request(self, status: int) -> None:
        self.requests.labels(self.service, str(status)).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class ScoreRequestMetrics:
    """ASGI middleware: every POST /v1/score, whoever answers it (the handler or the API-key check), is shown
    in flight, timed until its response is sent, and counted by status."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/score" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before it answers

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight_now.inc()
        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            self.metrics.in_flight_now.dec()
            self.metrics.latency_now.observe(time.perf_counter() - started)
            self.metrics.count_request(status)
