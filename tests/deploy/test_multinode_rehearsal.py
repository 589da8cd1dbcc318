"""Multi-node rehearsal on one machine: the JobSet's own entrypoint and torchrun settings, rendered by the chart,
run as two "nodes" (two torchrun agents meeting through c10d rendezvous on 127.0.0.1, one CPU process each)
against a local jpeg service, for one short GRPO epoch of tiny_jpeg whose prompt groups span both nodes. A second
run starts the trainer the way a one-process-per-node launcher does (no torchrun: WORLD_SIZE, MASTER_ADDR/PORT
and JOB_COMPLETION_INDEX only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from chart_tools import by_kind, render
from local_service import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
TIMEOUT_S = 1800  # minutes on an idle machine; the budget is for a loaded one
# One epoch of 16 images: 4 prompt groups of 4, 8 images (one sampling batch) on each node.
SHORT_EPOCH = [
    "--epochs", "1", "sample.batch_size=8", "train.batch_size=8", "sample.num_groups=4", "sample.group_size=4",
    "train.gradient_accumulation_steps=1", "sample.num_steps=4", "sample.eval_num_steps=2", "run.progress=false",
    "run.eval_every=0",
]  # fmt: skip


def rendered_node(dump_dir: Path) -> dict[str, Any]:
    """The container the chart's JobSet runs on every node, for 2 CPU nodes of tiny_jpeg against jpeg."""
    values = {
        "rewards": [{"name": "jpeg"}],
        "trainer": {
            "engine": "jobset",
            "nodes": 2,
            "gpusPerNode": 0,
            "preset": "tiny_jpeg",
            "args": [*SHORT_EPOCH, "--debug-dump", str(dump_dir)],
        },
    }
    [jobset] = by_kind(render(values), "JobSet").values()
    [container] = jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]["containers"]
    return container


def node_env(container: dict[str, Any], overrides: dict[str, str]) -> dict[str, str]:
    """This machine's environment plus the container's (literal values), with the cluster addresses replaced."""
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return {**os.environ, **env, **overrides, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run_nodes(commands: list[list[str]], envs: list[dict[str, str]], cwd: Path) -> None:
    """Start every node at once (each in its own process group) and wait for all; each must exit 0."""
    logs = [cwd / f"node{node}.log" for node in range(len(commands))]
    procs = []
    for cmd, env, log in zip(commands, envs, logs, strict=True):
        with log.open("w") as out:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(proc)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for proc in procs:  # torchrun's workers too: the whole group
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    for node, (proc, log) in enumerate(zip(procs, logs, strict=True)):
        assert proc.returncode == 0, f"node {node} exited with {proc.returncode}:\n{log.read_text()[-6000:]}"


def dumps(dump_dir: Path) -> tuple[dict, dict]:
    """Rank 0's and rank 1's debug dump of epoch 0."""
    return tuple(json.loads((dump_dir / f"epoch0000-rank{r}.json").read_text()) for r in (0, 1))


def assert_one_epoch_over_both_nodes(out_dir: Path, dump_dir: Path) -> None:
    """The epoch finished, each rank sampled its own 8 images, and some prompt group spans both."""
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "reward_mean" in r] == [1]
    rank0, rank1 = dumps(dump_dir)
    assert len(rank0["prompts"]) == len(rank1["prompts"]) == 8
    assert rank0["all_prompts"] == rank1["all_prompts"] == rank0["prompts"] + rank1["prompts"]
    assert rank0["all_advantages"] == rank1["all_advantages"]
    assert set(rank0["prompts"]) & set(rank1["prompts"]), "no prompt group spans the two nodes"
    assert sorted(rank0["all_prompts"].count(p) for p in set(rank0["all_prompts"])) == [4, 4, 4, 4]


def test_two_torchrun_nodes_with_c10d_rendezvous_run_the_manifests_entrypoint(
    module_service_process: Callable, tmp_path: Path
) -> None:
    url = module_service_process("jpeg").url
    container = rendered_node(tmp_path / "dump")
    assert container["command"] == ["torchrun", "-m", "rewardflow_trainer.cli"]
    args = [a.replace("/runs/", f"{tmp_path}/runs/") for a in container["args"]]
    command = [str(Path(sys.executable).with_name("torchrun")), *container["command"][1:], *args]
    rendezvous = container["env"][[e["name"] for e in container["env"]].index("PET_RDZV_ENDPOINT")]["value"]
    assert rendezvous.startswith("rewardflow-trainer-node-0-0.rewardflow-trainer:")
    overrides = {
        "PET_RDZV_ENDPOINT": f"127.0.0.1:{free_port()}",  # node 0's pod address, here this machine
        "REWARDFLOW_ENDPOINT_JPEG": url,  # the Service's address, here the local service
        "HF_HOME": str(tmp_path / "hf"),
    }
    env = node_env(container, overrides)
    assert (env["PET_NNODES"], env["PET_NPROC_PER_NODE"], env["PET_RDZV_BACKEND"]) == ("2", "1", "c10d")
    run_nodes([command, command], [env, env], cwd=tmp_path)
    assert_one_epoch_over_both_nodes(tmp_path / "runs" / "rewardflow-trainer", tmp_path / "dump")


def test_two_indexed_job_pods_without_torchrun_find_their_ranks(
    module_service_process: Callable, tmp_path: Path
) -> None:
    url = module_service_process("jpeg").url
    base = {
        **os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
        "REWARDFLOW_ENDPOINT_JPEG": url, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
    }  # fmt: skip
    for name in ("RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "NODE_RANK"):
        base.pop(name, None)
    command = [sys.executable, "-m", "rewardflow_trainer.cli", "--preset", "tiny_jpeg", "--out", "run"]
    command += [*SHORT_EPOCH, "--debug-dump", "dump"]
    envs = [{**base, "JOB_COMPLETION_INDEX": str(index)} for index in (0, 1)]
    run_nodes([command, command], envs, cwd=tmp_path)
    assert_one_epoch_over_both_nodes(tmp_path / "run", tmp_path / "dump")
