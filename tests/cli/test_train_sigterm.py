"""A `rewardflow train` stopped by SIGTERM (a `kill`, a pod's shutdown) stops the services it started."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

_SCRIPT = Path(sys.executable).with_name("rewardflow")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rewardflow.cli"]


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.slow
def test_sigterm_stops_the_local_stack_the_run_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDFLOW_")}
    env["REWARDFLOW_STACK_FILE"] = str(tmp_path / "stack.json")  # no running stack is found: the run starts one
    out = tmp_path / "run"
    argv = [*COMMAND, "train", "--preset", "tiny_jpeg", "--epochs", "500", "--out", str(out), "run.progress=false"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: any((out / "logs").glob("jpeg-*.log")), 120, "the jpeg service's log")
        [log] = (out / "logs").glob("jpeg-*.log")
        url = f"http://127.0.0.1:{log.stem.rsplit('-', 1)[1]}"
        _wait_for(lambda: (out / "metrics.jsonl").exists(), 180, "the run's first metrics")
        assert _answers(url)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert code == 128 + signal.SIGTERM, proc.stderr.read() if proc.stderr else ""
    _wait_for(lambda: not _answers(url), 15, f"the jpeg service at {url} to stop")
