"""A scoring failure seen by one rank only does not hang the other: in a real 2-process run (accelerate, gloo on
CPU) where rank 1's reward service is down (or answers NaN) and rank 0's is fine, both ranks stop together, with
the same exit code and the same one-line message naming the failure and the rank that saw it; after an outage
past reward.outage_grace_s the epoch's start is checkpointed first (both ranks take part, as --resume needs).

Each rank gets its own endpoints through tests/trainer/rank_endpoints.py; a hang fails the test at LAUNCH_S.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
HELPER = Path(__file__).resolve().with_name("rank_endpoints.py")
LAUNCH_S = 420.0  # a hang guard: a 1-epoch 2-process run takes 1-2 minutes on the loaded 2-core machine
SMALL_RUN = (
    "--epochs", "1", "run.progress=false", "run.eval_every=0", "sample.batch_size=8", "train.batch_size=8",
    "sample.num_groups=4", "train.gradient_accumulation_steps=1", "reward.max_retries=0",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(tmp_path: Path, rank_env: dict[str, str], *overrides: str) -> tuple[int, str]:
    """Two ranks of `rewardflow train` (rank r gets TEST_RANK<r>_* variables); (launcher exit code, stderr)."""
    accelerate = Path(sys.executable).with_name("accelerate")
    argv = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "--monitor_interval", "5",  # ranks that stop together both exit by themselves, not by the launcher's kill
        str(HELPER), "--out", str(tmp_path / "run"), *SMALL_RUN, *overrides,
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDFLOW_")}
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", TEST_EXIT_DIR=str(tmp_path), **rank_env)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=LAUNCH_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the launcher and both ranks
        _, stderr = process.communicate()
        pytest.fail(
            f"the 2-process run still ran after {LAUNCH_S:.0f} s (a rank waits in a collective):\n{stderr[-5000:]}"
        )
    return process.returncode, stderr


def rank_exits(tmp_path: Path) -> list[str]:
    return [(tmp_path / f"rank{r}.exit").read_text() if (tmp_path / f"rank{r}.exit").exists() else "?" for r in (0, 1)]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("rewardflow train: ")]


def test_an_outage_on_one_rank_checkpoints_and_stops_both(module_service_process: Callable, tmp_path: Path) -> None:
    url, down = module_service_process("jpeg").url, f"http://127.0.0.1:{free_port()}"
    env = {"TEST_RANK0_REWARDFLOW_ENDPOINT_JPEG": url, "TEST_RANK1_REWARDFLOW_ENDPOINT_JPEG": down}
    # eval_limit=1: only rank 0 scores the first evaluation, so rank 1 meets the outage while sampling.
    code, stderr = launch(tmp_path, env, "reward.outage_grace_s=1", "prompts.eval_limit=1")
    assert code != 0
    assert rank_exits(tmp_path) == ["2", "2"], stderr[-5000:]
    lines = error_lines(stderr)
    assert len(lines) == 2 and lines[0] == lines[1], stderr[-5000:]
    assert lines[0].startswith("rewardflow train: reward service failed: reward jpeg_compressibility (service 'jpeg')")
    assert down in lines[0] and "rank 1 of 2" in lines[0] and "outage_grace_s" in lines[0]
    assert f"continue with --resume {tmp_path / 'run'}" in lines[0]
    assert (tmp_path / "run" / "checkpoints" / "epoch-000000" / "trainable.safetensors").is_file()


def test_a_failure_while_evaluating_on_one_rank_stops_both(module_service_process: Callable, tmp_path: Path) -> None:
    url, down = module_service_process("jpeg").url, f"http://127.0.0.1:{free_port()}"
    env = {"TEST_RANK0_REWARDFLOW_ENDPOINT_JPEG": url, "TEST_RANK1_REWARDFLOW_ENDPOINT_JPEG": down}
    code, stderr = launch(tmp_path, env, "reward.outage_grace_s=0")  # rank 1 scores its half of the first eval
    assert code != 0
    assert rank_exits(tmp_path) == ["2", "2"], stderr[-5000:]
    lines = error_lines(stderr)
    assert len(lines) == 2 and lines[0] == lines[1], stderr[-5000:]
    assert down in lines[0] and "rank 1 of 2" in lines[0]


def test_invalid_scores_on_one_rank_stop_both(
    module_service_process: Callable, service_process: Callable, tmp_path: Path
) -> None:
    url = module_service_process("jpeg").url
    trainer_tests = str(Path(__file__).resolve().parent)
    nan = service_process("nan_scorers:NanJpegScorer", env={"PYTHONPATH": trainer_tests}).url
    env = {"TEST_RANK0_REWARDFLOW_ENDPOINT_JPEG": url, "TEST_RANK1_REWARDFLOW_ENDPOINT_JPEG": nan}
    code, stderr = launch(tmp_path, env, "reward.on_invalid_score=stop", "prompts.eval_limit=1")
    assert code != 0
    assert rank_exits(tmp_path) == ["2", "2"], stderr[-5000:]
    lines = error_lines(stderr)
    assert len(lines) == 2 and lines[0] == lines[1], stderr[-5000:]
    assert lines[0].startswith("rewardflow train: rank 1 of 2: epoch 0: 8 of 8 images have no finite reward")
    assert not (tmp_path / "run" / "checkpoints").exists()  # not an outage: nothing to resume from
