"""Fail fast, say why: a service whose model cannot load exits non-zero with one line naming the setting and the
cause, within seconds (no 47 s of hub retries); a cached model loads while the hub is down; the local stack
reports a failed load as soon as the process exits or /readyz says why. Real processes, real HTTP.

"The hub is unreachable" is made certain on any machine: HF_ENDPOINT points at a local port nobody listens on.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from rewardflow_kit.stack import StackError, pid_alive, start_stack
from rewardflow_vision.tiny import write_tiny_clip

EXIT_LOAD_FAILED = 3
MISSING = "rewardflow-test/not-cached"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def no_hub(cache: Path) -> dict[str, str]:
    """An empty HF cache and a hub endpoint that refuses connections; HF_HUB_OFFLINE unset (0)."""
    return {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HUB_OFFLINE": "0"}


def wait_exit(process, timeout_s: float) -> int:
    try:
        return process.wait(timeout_s)
    except Exception:
        process.kill()
        raise


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.mark.slow
def test_a_model_missing_from_the_cache_with_no_hub_exits_in_seconds_with_one_line(
    service_process: Callable, tmp_path: Path
) -> None:
    started = time.monotonic()
    env = {**no_hub(tmp_path / "hub"), "REWARDFLOW_MODEL": MISSING}
    service = service_process("clipscore", env=env, wait=None)
    code = wait_exit(service.process, 60)
    elapsed = time.monotonic() - started
    assert code == EXIT_LOAD_FAILED, service.log()
    assert elapsed < 15, f"took {elapsed:.1f} s"
    line = last_line(service.log())
    assert line.startswith(f"clipscore: cannot load REWARDFLOW_MODEL='{MISSING}': not in the local Hugging Face cache")
    assert "is unreachable (ConnectError" in line and line.endswith("(run `rewardflow models pull clipscore` where "
                                                                  "the hub is reachable)")  # fmt: skip
    assert "Traceback" not in service.log() and "Retrying" not in service.log()


@pytest.mark.slow
def test_offline_and_not_cached_names_hf_hub_offline(service_process: Callable, tmp_path: Path) -> None:
    env = {**no_hub(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "REWARDFLOW_MODEL": MISSING}
    service = service_process("clipscore", env=env, wait=None)
    assert wait_exit(service.process, 60) == EXIT_LOAD_FAILED, service.log()
    assert last_line(service.log()).startswith(f"clipscore: cannot load REWARDFLOW_MODEL='{MISSING}'")
    assert "and HF_HUB_OFFLINE=1 keeps the hub offline" in last_line(service.log())


def test_any_load_error_is_one_line_and_a_setting_keeps_the_old_behaviour(service_process: Callable) -> None:
    service = service_process("scorers:BrokenLoadScorer", wait=None)
    assert wait_exit(service.process, 60) == EXIT_LOAD_FAILED
    assert last_line(service.log()) == "probe: FileNotFoundError: model weights not found at /models/probe.safetensors"
    assert "Traceback" not in service.log()
    stays = service_process("scorers:BrokenLoadScorer", env={"REWARDFLOW_STAY_UP_ON_LOAD_ERROR": "1"}, wait="/healthz")
    deadline = time.monotonic() + 30
    while httpx.get(stays.url + "/readyz").json()["status"] == "loading" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert httpx.get(stays.url + "/readyz").json()["status"] == "failed" and stays.alive()


def test_a_bad_setting_is_one_line_naming_the_variable(service_process: Callable) -> None:
    service = service_process("jpeg", env={"REWARDFLOW_MAX_BATCH_SIZE": "-1"}, wait=None)
    assert wait_exit(service.process, 60) == 2
    assert service.log().strip() == (
        "error: REWARDFLOW_MAX_BATCH_SIZE='-1': input should be greater than or equal to 1"
    )


@pytest.mark.slow
def test_a_cached_model_loads_without_retries_while_the_hub_is_down(service_process: Callable, tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    snapshot = cache / "models--rewardflow-test--tiny-clip" / "snapshots" / ("a" * 40)
    write_tiny_clip(tmp_path / "tiny", seed=0)
    shutil.copytree(tmp_path / "tiny", snapshot)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("a" * 40)
    started = time.monotonic()
    env = {**no_hub(cache), "REWARDFLOW_MODEL": "rewardflow-test/tiny-clip", "REWARDFLOW_DEVICE": "cpu"}
    service = service_process("clipscore", env=env, wait="/readyz", timeout_s=120)
    # huggingface_hub's retries alone would take 47 s (1+2+4+8+8 s for each of two files).
    assert time.monotonic() - started < 40
    assert "Retrying" not in service.log() and service.alive()


@pytest.mark.slow
def test_the_stack_reports_a_failed_load_from_readyz_without_waiting_for_the_timeout(tmp_path: Path) -> None:
    env = {**no_hub(tmp_path / "hub"), "REWARDFLOW_MODEL": MISSING, "REWARDFLOW_STAY_UP_ON_LOAD_ERROR": "true"}
    started = time.monotonic()
    with pytest.raises(StackError) as failure:
        start_stack(["clipscore"], ready_timeout_s=120, log_dir=tmp_path / "logs", env=env)
    assert time.monotonic() - started < 30
    message = str(failure.value)
    assert message.startswith("service clipscore at http://127.0.0.1:") and "\n" not in message
    assert f"failed to load: cannot load REWARDFLOW_MODEL='{MISSING}'" in message
    [log] = (tmp_path / "logs").glob("clipscore-*.log")
    pid = int(
        next(line for line in log.read_text().splitlines() if "Started server process" in line).split("[")[1][:-1]
    )
    assert not pid_alive(pid)  # stopped by start_stack
