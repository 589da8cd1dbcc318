"""The README is the front door: its test command is CI's, and its examples and settings match the code."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerfiles import REPO_ROOT
from local_service import free_port, running

README = (REPO_ROOT / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    """The README's fenced code blocks in one language."""
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    commands = [line.split("#")[0].strip() for block in code_blocks("bash") for line in block.splitlines()]
    assert "make test" in commands and "make demo" in commands
    ci = (REPO_ROOT / ".ci" / "run").read_text().splitlines()
    steps = [line.strip() for line in ci if line.strip() and not line.lstrip().startswith("#")]
    assert ci[0].startswith("#!") and ci[0].endswith("bash")
    assert "set -euo pipefail" in steps
    assert steps[-1] == "make test"


def test_every_service_setting_is_documented() -> None:
    from rewardflow_kit import ServiceSettings

    documented = set(re.findall(r"^\| `(REWARDFLOW_[A-Z_]+)` \|", README, re.MULTILINE))
    fields = {f"REWARDFLOW_{name.upper()}" for name in ServiceSettings.model_fields}
    assert fields - documented == set(), "settings missing from the README"
    assert documented - fields == set(), "README documents settings that do not exist"


def test_every_cli_subcommand_is_documented() -> None:
    from rewardflow import cli

    parser = cli._parser()
    [sub] = [a for a in parser._actions if a.dest == "command"]
    for name in sub.choices:
        assert re.search(rf"^rewardflow {name}\b", README, re.MULTILINE), f"no example of `rewardflow {name}`"


@pytest.fixture(scope="module")
def jpeg_url() -> Iterator[str]:
    """A jpeg service started the README's way, on a free port."""
    port = free_port()
    with running([sys.executable, "-m", "rewardflow.cli", "serve", "jpeg", "--port", str(port)], port) as url:
        yield url


def test_python_example_runs(jpeg_url: str, tmp_path: Path) -> None:
    [example] = [b for b in code_blocks("python") if "RewardClient" in b]
    example = re.sub(r"http://127\.0\.0\.1:810\d", jpeg_url, example)
    script = tmp_path / "example.py"
    script.write_text(example)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "[None, None, None, None]" in proc.stdout
