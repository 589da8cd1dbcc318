"""The readiness probes in the Dockerfiles and compose.yaml pass against a real service and fail without one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dockerfiles import SERVICE_DOCKERFILE, compose_builds, instructions
from local_service import free_port, running

# The reward services compose.yaml builds from the service Dockerfile.
REWARDS = sorted(name for name, dockerfile, _ in compose_builds() if dockerfile == SERVICE_DOCKERFILE)


def dockerfile_probe(dockerfile: Path) -> list[str]:
    """The exec-form HEALTHCHECK command of a Dockerfile."""
    [args] = [args for kind, args in instructions(dockerfile) if kind == "HEALTHCHECK"]
    return json.loads(args[args.index("CMD") + 3 :].strip())


def run_probe(command: list[str], port: int) -> int:
    """Exit status of a probe run the way the container runs it, with this interpreter as `python`."""
    assert command[0] == "python", f"probe {command}: expected to start with python (no curl in slim images)"
    env = {**os.environ, "REWARDFLOW_PORT": str(port)}
    return subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True, timeout=30).returncode


@pytest.fixture(scope="module")
def ready_port() -> Iterator[int]:
    """The service image's CMD for SERVICE=jpeg as a local process on a free port, once /readyz answers 200.

    The image sets REWARDFLOW_SERVICE from its SERVICE build argument; every probe only asks /readyz on
    $REWARDFLOW_PORT, so one model-free service checks them all.
    """
    [cmd] = [json.loads(args) for kind, args in instructions(SERVICE_DOCKERFILE) if kind == "CMD"]
    port = free_port()
    with running([sys.executable, *cmd[1:]], port, env={"REWARDFLOW_SERVICE": "jpeg"}):
        yield port


def test_dockerfile_probe_passes_when_ready(ready_port: int) -> None:
    assert run_probe(dockerfile_probe(SERVICE_DOCKERFILE), ready_port) == 0


@pytest.mark.parametrize("name", REWARDS)
def test_compose_probe_passes_when_ready(name: str, ready_port: int, compose: dict[str, Any]) -> None:
    probe = compose["services"][name]["healthcheck"]["test"]
    assert probe[0] == "CMD"
    assert run_probe(probe[1:], ready_port) == 0


@pytest.mark.parametrize("name", REWARDS)
def test_probes_fail_when_nothing_listens(name: str, compose: dict[str, Any]) -> None:
    port = free_port()
    assert run_probe(dockerfile_probe(SERVICE_DOCKERFILE), port) != 0
    assert run_probe(compose["services"][name]["healthcheck"]["test"][1:], port) != 0
