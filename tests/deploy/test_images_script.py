"""`make images` (scripts/images.py) builds every reward and the trainer, in the flavours compose runs."""

from __future__ import annotations

import shlex
import subprocess
import sys

from dockerfiles import REPO_ROOT


def printed_commands() -> list[list[str]]:
    """The docker build commands `scripts/images.py --print --registry r.example/` prints."""
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "images.py"), "--print", "--registry", "r.example/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return [shlex.split(line) for line in done.stdout.splitlines()]


def test_every_reward_and_the_trainer_is_built_and_tagged() -> None:
    from rewardflow_kit.registry import discover

    commands = printed_commands()
    tags = {c[c.index("-t") + 1] for c in commands}
    for name in discover():
        assert any(t.startswith(f"r.example/rewardflow-{name}:") for t in tags), name
    assert {"r.example/rewardflow-trainer:0.1.0", "r.example/rewardflow-trainer:0.1.0-cpu"} <= tags
    assert {"r.example/rewardflow-pickscore:0.1.0", "r.example/rewardflow-pickscore:0.1.0-cpu"} <= tags
    for command in commands:
        assert command[:4] == ["docker", "build", "-f", command[3]] and command[-1] == "."
        args = dict(command[i + 1].split("=", 1) for i, word in enumerate(command) if word == "--build-arg")
        assert args["VERSION"] == "0.1.0" and args["REVISION"]
        if command[3] == "services/Dockerfile":
            assert command[command.index("-t") + 1].startswith(f"r.example/rewardflow-{args['SERVICE']}:")
        cuda = not command[command.index("-t") + 1].endswith("-cpu")
        if "TORCH_INDEX_URL" in args:
            assert args["TORCH_INDEX_URL"].endswith("/whl/cu128" if cuda else "/whl/cpu")


def test_an_unknown_service_is_refused() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "images.py"), "--print", "--only", "pickscor"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "pickscor" in done.stderr
