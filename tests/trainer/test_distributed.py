"""A real 2-process CPU run through accelerate: groups span ranks, advantages are computed over the
rewards gathered from both.

accelerate 1.15's `launch --cpu --num_processes 2` starts ONE process unless an MPI hostfile is given;
`launch --multi_gpu --num_processes 2` starts two through torchrun, and on a machine without CUDA the
trainer's Accelerator(cpu=True) makes that a gloo MULTI_CPU run. That is what this test launches.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rewardflow_trainer.advantages import PerPromptStatTracker
from rewardflow_trainer.logging import read_metrics
from rewardflow_trainer.prompts import GroupedPromptSampler, load_prompts

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
EPOCHS = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(module_service_process: Callable, tmp_path_factory: pytest.TempPathFactory) -> Path:
    url = module_service_process("jpeg").url
    out = tmp_path_factory.mktemp("dist")
    accelerate = Path(sys.executable).with_name("accelerate")
    argv = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "rewardflow_trainer.cli",
        "--epochs", str(EPOCHS), "--out", str(out / "run"), "--debug-dump", str(out / "dump"),
        f'reward.endpoints.jpeg=["{url}"]', "sample.batch_size=8", "train.batch_size=8",
        "sample.num_groups=4", "train.gradient_accumulation_steps=1",  # one batch of 8 per rank
        "run.progress=false", "run.eval_every=0",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"accelerate launch failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert "reward start" in done.stdout
    return out


def _dumps(out: Path, epoch: int) -> tuple[dict, dict]:
    return tuple(json.loads((out / "dump" / f"epoch{epoch:04d}-rank{r}.json").read_text()) for r in (0, 1))


@pytest.mark.parametrize("epoch", range(EPOCHS))
def test_ranks_gather_the_same_epoch_in_rank_order(two_process_run: Path, epoch: int) -> None:
    rank0, rank1 = _dumps(two_process_run, epoch)
    assert len(rank0["prompts"]) == len(rank1["prompts"]) == 8
    assert rank0["all_prompts"] == rank1["all_prompts"] == rank0["prompts"] + rank1["prompts"]
    assert rank0["all_rewards"] == rank1["all_rewards"] == rank0["rewards"] + rank1["rewards"]
    assert rank0["all_advantages"] == rank1["all_advantages"] == rank0["advantages"] + rank1["advantages"]
    # The ranks drew their own samples (different images, different rewards).
    assert rank0["rewards"] != rank1["rewards"]


@pytest.mark.parametrize("epoch", range(EPOCHS))
def test_groups_span_ranks_as_the_grouped_sampler_says(two_process_run: Path, epoch: int) -> None:
    rank0, rank1 = _dumps(two_process_run, epoch)
    prompts = load_prompts("tiny")
    for rank, dump in enumerate((rank0, rank1)):
        expected = GroupedPromptSampler(prompts, 4, 4, 8, num_replicas=2, rank=rank, seed=42).batches(epoch)
        assert dump["prompts"] == [p for batch in expected for p in batch.prompts]
    counts = {p: rank0["all_prompts"].count(p) for p in set(rank0["all_prompts"])}
    assert sorted(counts.values()) == [4, 4, 4, 4]  # 4 groups of group_size 4 over both ranks
    shared = set(rank0["prompts"]) & set(rank1["prompts"])
    assert shared, "no prompt group spans the two ranks in this epoch"


@pytest.mark.parametrize("epoch", range(EPOCHS))
def test_advantages_use_the_rewards_of_both_ranks(two_process_run: Path, epoch: int) -> None:
    rank0, rank1 = _dumps(two_process_run, epoch)
    gathered = PerPromptStatTracker(global_std=True).update(rank0["all_prompts"], rank0["all_rewards"])
    np.testing.assert_array_equal(gathered, rank0["all_advantages"])
    # Normalizing each rank alone gives other numbers for the groups that span ranks.
    alone = PerPromptStatTracker(global_std=True).update(rank0["prompts"], rank0["rewards"])
    assert not np.allclose(alone, rank0["advantages"])
    # By hand for one group that spans both ranks: its mean is over the members on both ranks.
    prompt = sorted(set(rank0["prompts"]) & set(rank1["prompts"]))[0]
    rewards = np.array(rank0["all_rewards"])
    members = np.array([p == prompt for p in rank0["all_prompts"]])
    expected = (rewards[members] - rewards[members].mean()) / (rewards.std() + 1e-4)
    np.testing.assert_allclose(np.array(rank0["all_advantages"])[members], np.clip(expected, -5, 5), rtol=1e-12)


def test_the_two_process_run_logs_and_checkpoints_once(two_process_run: Path) -> None:
    records = [r for r in read_metrics(two_process_run / "run") if "reward_mean" in r]
    assert [r["epoch"] for r in records] == list(range(1, EPOCHS + 1))
    for record in records:
        assert record["ratio_dev_on_policy"] == 0.0
        assert record["trained_samples"] == 8  # this rank's share of the 16 samples
    assert (two_process_run / "run" / "checkpoints" / f"epoch-{EPOCHS:06d}" / "trainable.safetensors").is_file()


def test_two_processes_share_the_one_local_stack_that_rank_0_starts(tmp_path: Path) -> None:
    accelerate = Path(sys.executable).with_name("accelerate")
    argv = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        "-m", "rewardflow_trainer.cli", "--epochs", "1", "--out", str(tmp_path / "run"),
        "sample.batch_size=8", "train.batch_size=8", "run.progress=false", "run.eval_every=0",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "REWARDFLOW_STACK_FILE": str(tmp_path / "stack.json")}  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, f"accelerate launch failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert done.stdout.count("reward start") == 1  # the summary is printed by the main process only
    logs = list((tmp_path / "run" / "logs").glob("jpeg-*.log"))
    assert len(logs) == 1, f"expected one jpeg service (started by rank 0), found logs {logs}"
    port = int(logs[0].stem.split("-")[1])
    assert_nothing_listens(port)  # the service was stopped at the end of the run


def assert_nothing_listens(port: int) -> None:
    """No process listens on 127.0.0.1:`port`: a connection is refused and a new listener could bind it.

    A plain bind can fail after a clean stop too: the service's closed connections hold the port in TIME_WAIT
    for a minute. SO_REUSEADDR binds through TIME_WAIT but still fails while a socket listens there.
    """
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.settimeout(10)
        sock.connect(("127.0.0.1", port))
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()
