"""Hostile requests (issue 17): slow bodies hold no memory and get 408, a cap on bodies in flight, disconnects
are 499, a scorer's costly `validate` never stalls the event loop.

Every test runs a real service process and talks to it over raw sockets on 127.0.0.1.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import pytest
from raw_http import PeakRss, assert_responsive, healthz_ms, metric, read_reply, rss_mb, start_upload, status_of
from rewardflow_proto import ScoreRequest, encode_request
from service_calls import error_of, post, random_images

pytestmark = pytest.mark.slow

DECLARED = 67_108_863  # just under the default max_body_bytes of 64 MiB
SLOW_CLIENTS = 40
RSS_BOUND_MB = 200  # the 40 slow uploads may grow the service by this much at most (the old code took ~2.6 GB)


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` every 50 ms until it holds or `timeout_s` passes; whether it held."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_slow_uploads_reserve_no_memory_and_get_408_after_the_body_deadline(service_process: Callable) -> None:
    service = service_process(
        "scorers:ProbeScorer", env={"REWARDFLOW_BODY_TIMEOUT_S": "2", "REWARDFLOW_MAX_INFLIGHT_BODIES": "64"}
    )
    pid = service.process.pid
    idle = rss_mb(pid)
    # The safety net kills the service long before the old code's 2.6 GB; the assertions below then fail.
    with PeakRss(pid, kill_above_mb=idle + 1000, kill=service.process.kill).running() as peak:
        started = time.monotonic()
        sockets = [start_upload(service.port, DECLARED, b"\x80") for _ in range(SLOW_CLIENTS)]
        try:
            all_in = wait_until(lambda: metric(service.url, "rewardflow_in_flight_requests") == SLOW_CLIENTS, 1.5)
            time.sleep(0.3)  # let every handler start on its body
            assert service.alive(), f"the service died (RSS peaked at {peak.peak_mb:.0f} MiB, idle {idle:.0f} MiB)"
            assert all_in, "not every slow upload reached the handler"
            with httpx.Client() as client:
                health = [healthz_ms(client, service.url) for _ in range(20)]
            grown = peak.peak_mb - idle
            replies = [read_reply(sock, timeout_s=max(0.1, started + 6.0 - time.monotonic())) for sock in sockets]
            answered = time.monotonic() - started
        finally:
            for sock in sockets:
                sock.close()
    assert grown < RSS_BOUND_MB, f"{SLOW_CLIENTS} one-byte uploads grew the service by {grown:.0f} MiB"
    assert_responsive(health, f"{SLOW_CLIENTS} bodies were pending")
    assert [status_of(reply) for reply, _ in replies] == [408] * SLOW_CLIENTS, replies[0][0][:300]
    assert all(closed for _, closed in replies), "a connection with an unfinished body must be closed after its 408"
    assert b"request_timeout" in replies[0][0] and b"body_timeout_s" in replies[0][0]
    assert 1.5 <= answered < 6.0
    assert metric(service.url, "rewardflow_requests_total", code="408") == SLOW_CLIENTS
    assert httpx.get(service.url + "/v1/info").json()["body_timeout_s"] == 2.0


def test_bodies_beyond_max_inflight_bodies_get_429_with_retry_after(service_process: Callable) -> None:
    service = service_process(
        "scorers:ProbeScorer", env={"REWARDFLOW_BODY_TIMEOUT_S": "20", "REWARDFLOW_MAX_INFLIGHT_BODIES": "4"}
    )
    sockets = [start_upload(service.port, 1000, b"\x80") for _ in range(4)]
    body = encode_request(ScoreRequest(images=random_images(1), prompts=["p"]))
    try:
        receiving = wait_until(lambda: metric(service.url, "rewardflow_receiving_bodies") == 4, 5.0)
        assert receiving, "the four slow uploads are not shown as bodies being received"
        reply = post(service.url, body)
        assert reply.status_code == 429, reply.content
        assert reply.headers["retry-after"] == "1"
        error = error_of(reply)
        assert error["code"] == "overloaded" and "max_inflight_bodies" in error["message"] and "4" in error["message"]
    finally:
        for sock in sockets:
            sock.close()
    assert wait_until(lambda: metric(service.url, "rewardflow_receiving_bodies") == 0, 5.0)
    assert post(service.url, body).status_code == 200
    assert httpx.get(service.url + "/v1/info").json()["max_inflight_bodies"] == 4


def test_client_that_disconnects_mid_upload_is_a_499_not_a_500(service_process: Callable) -> None:
    service = service_process("scorers:ProbeScorer")
    sock = start_upload(service.port, 1000, b"\x80" * 500)
    try:
        assert wait_until(lambda: metric(service.url, "rewardflow_in_flight_requests") == 1, 5.0)
    finally:
        sock.close()
    assert wait_until(lambda: metric(service.url, "rewardflow_in_flight_requests") == 0, 5.0)
    assert metric(service.url, "rewardflow_requests_total", code="500") == 0
    assert metric(service.url, "rewardflow_requests_total", code="499") == 1
    log = service.log()
    assert "Traceback" not in log, log
    assert [line for line in log.splitlines() if "disconnected" in line and " ERROR " not in line], log
    assert post(service.url, encode_request(ScoreRequest(images=random_images(1), prompts=["p"]))).status_code == 200


def test_a_slow_validate_runs_off_the_event_loop(service_process: Callable) -> None:
    service = service_process("limit_scorers:SlowValidateScorer", env={"TEST_VALIDATE_SLEEP_S": "1.0"})
    body = encode_request(ScoreRequest(images=random_images(1), prompts=["p"]))
    replies: list[httpx.Response] = []
    sender = threading.Thread(target=lambda: replies.append(post(service.url, body)))
    latencies: list[float] = []
    with httpx.Client() as client:
        healthz_ms(client, service.url)
        sender.start()
        while sender.is_alive() and len(latencies) < 2000:
            latencies.append(healthz_ms(client, service.url))
    sender.join(timeout=30)
    assert replies and replies[0].status_code == 200
    assert_responsive(latencies, "validate() slept 1 s")
