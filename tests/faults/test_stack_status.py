"""`rewardflow stack status`: readiness, in-flight requests and error counts per replica, from /readyz and /metrics."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
from rewardflow_kit.stack import stack_status, write_stack_file
from rewardflow_proto import ScoreRequest, encode_request

from rewardflow import cli

pytestmark = pytest.mark.slow
READY_S = 300.0  # a hang guard for a service coming up on a busy 2-core machine, not a speed
MSGPACK = {"content-type": "application/msgpack"}


def _body(prompt: str = "p") -> bytes:
    return encode_request(ScoreRequest(images=np.zeros((1, 4, 4, 3), np.uint8), prompts=[prompt]))


def test_status_shows_readiness_in_flight_and_errors_per_replica(
    service_process: Callable, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    faults, gate = tmp_path / "faults.json", tmp_path / "gate"
    faults.write_text(json.dumps({"status": 503, "count": 1}))
    service = service_process("scorers:ProbeScorer", env={"REWARDFLOW_FAULT_FILE": str(faults)}, timeout_s=READY_S)
    url = service.url
    assert httpx.post(url + "/v1/score", content=_body(), headers=MSGPACK).status_code == 503  # injected, once
    assert httpx.post(url + "/v1/score", content=_body(), headers=MSGPACK).status_code == 200
    assert httpx.post(url + "/v1/score", content=_body("invalid"), headers=MSGPACK).status_code == 422
    faults.write_text(json.dumps({"hold_file": str(gate)}))
    held = threading.Thread(target=lambda: httpx.post(url + "/v1/score", content=_body(), headers=MSGPACK, timeout=60))
    held.start()
    stack_file = tmp_path / "stack.json"
    write_stack_file({"probe": {"urls": [url], "pids": [service.process.pid], "logs": []}}, stack_file)
    try:
        for _ in range(3000):  # until the held request is in flight (a hang guard, not a speed)
            (replica,) = stack_status(stack_file)
            if replica.in_flight == 1:
                break
        monkeypatch.setenv("REWARDFLOW_STACK_FILE", str(stack_file))
        assert cli.main(["stack", "status"]) == 0
    finally:
        gate.touch()
        held.join(60)
    assert (replica.state, replica.in_flight, replica.errors) == ("ready", 1, 2)
    assert replica.requests == {"200": 1, "422": 1, "503": 1}
    printed = capsys.readouterr().out
    pid = service.process.pid
    assert f"probe  {url}  pid {pid}  ready  in-flight 1  errors 2  requests 200:1 422:1 503:1" in printed
    service.stop()
    (down,) = stack_status(stack_file)
    assert down.state.startswith("down") and down.in_flight is None
