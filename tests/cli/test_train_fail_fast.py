"""`rewardflow train` stops at a configuration or reward-service error with one line, the cause and the fix,
exit code 2 (a traceback only with --debug): real processes, a real service that fails to load."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

_SCRIPT = Path(sys.executable).with_name("rewardflow")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rewardflow.cli"]
MISSING = "rewardflow-test/not-cached"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def train(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDFLOW_")}
    env["REWARDFLOW_STACK_FILE"] = str(tmp_path / "stack.json")  # no running stack is found
    argv = [*COMMAND, "train", "--epochs", "1", "--out", str(tmp_path / "run"), "run.progress=false", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)


@pytest.mark.slow
def test_a_reward_service_that_cannot_load_stops_the_run_in_one_line(tmp_path: Path) -> None:
    result = train(
        tmp_path,
        "reward.weights={clipscore: 1}",
        "reward.start_local_stack=true",
        f"reward.local_env.REWARDFLOW_MODEL={MISSING}",
        f"reward.local_env.HF_HUB_CACHE={tmp_path / 'hub'}",
        f"reward.local_env.HF_ENDPOINT=http://127.0.0.1:{free_port()}",  # the hub does not answer
        "reward.local_env.HF_HUB_OFFLINE=0",
    )
    ended = time.time()
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("rewardflow train: a reward service did not start: service clipscore at http://127.0.0.1:")
    # The service's own cause: the run stopped when the service exited, not at the 120 s ready timeout (whose error
    # says "not ready after 120s").
    assert f"failed to load: cannot load REWARDFLOW_MODEL='{MISSING}': not in the local Hugging Face cache" in line
    assert "(run `rewardflow models pull clipscore` where the hub is reachable)" in line
    # Before any training work: the run directory holds the services' logs and nothing of train() (no heartbeat,
    # metrics, grids, checkpoints, config).
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["logs"]
    # A hang guard, not a speed (15.6 s were seen on a loaded 2-core machine): far less than the ready timeout.
    [log] = (tmp_path / "run" / "logs").glob("clipscore-*.log")
    after = ended - log.stat().st_mtime
    assert after < 60, f"the run went on {after:.1f} s after the service's last line"


@pytest.mark.slow
def test_no_running_service_is_a_configuration_error_with_the_fix(tmp_path: Path) -> None:
    result = train(tmp_path, "reward.start_local_stack=false")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "rewardflow train: no running service for ['jpeg']: run `rewardflow stack up jpeg`, set reward.endpoints, "
        "or set reward.start_local_stack=true"
    ]
    debug = train(tmp_path, "reward.start_local_stack=false", "--debug")
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


@pytest.mark.slow
def test_a_service_that_is_down_during_the_run_says_how_to_resume(tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    # No grace period: the first outage is the error (with the default the run re-sends for outage_grace_s first).
    result = train(tmp_path, f"reward.endpoints.jpeg={down}", "reward.max_retries=0", "reward.outage_grace_s=0")
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()[-1:]
    assert line.startswith("rewardflow train: reward service failed: reward jpeg_compressibility (service 'jpeg')")
    assert down in line and f"continue with --resume {tmp_path / 'run'}" in line
    assert "Traceback" not in result.stderr
