"""The `rewardflow` command: stack up/status/down and score, run as real processes; option parsing."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rewardflow_kit.stack import load_stack_file, pid_alive

from rewardflow.cli import UserError, format_table, parse_rewards

_SCRIPT = Path(sys.executable).with_name("rewardflow")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rewardflow.cli"]


def rewardflow(*args: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    # A deadline, not a measure: `train --help` imports the trainer (torch, diffusers), 99 s on a loaded 2-core box.
    return subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def size_kb(path: Path) -> float:
    """The jpeg score computed here, independently of the service."""
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "REWARDFLOW_STACK_FILE": str(tmp_path / "stack.json")}


@pytest.fixture
def pngs(tmp_path: Path) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (h, w) in enumerate([(32, 32), (32, 32), (24, 40)]):  # the third forces the list path
        noise = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = (noise * (i / 2) + 128 * (1 - i / 2)).astype(np.uint8)
        paths.append(tmp_path / f"image{i}.png")
        Image.fromarray(image).save(paths[-1])
    return paths


@pytest.fixture
def running_stack(env: dict[str, str]) -> Iterator[dict[str, str]]:
    up = rewardflow("stack", "up", "jpeg", "--port-base", str(free_port()), env=env)
    assert up.returncode == 0, up.stderr
    yield env
    rewardflow("stack", "down", env=env)


@pytest.mark.slow
@pytest.mark.e2e
def test_stack_up_score_status_down(running_stack: dict[str, str], pngs: list[Path]) -> None:
    env = running_stack
    services = load_stack_file(Path(env["REWARDFLOW_STACK_FILE"]))
    pid = services["jpeg"]["pids"][0]
    assert pid_alive(pid), "the service must outlive the `stack up` command"

    status = rewardflow("stack", "status", env=env)
    assert status.returncode == 0
    assert f"jpeg  {services['jpeg']['urls'][0]}  pid {pid}  ready" in status.stdout

    kb = [size_kb(p) for p in pngs]
    table = rewardflow("score", *map(str, pngs), "--prompt", "a cat", "--reward", "jpeg", "--reward", "jpeg_size_kb",
                       "--weight", "jpeg_size_kb=0.5", env=env)  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["image", "jpeg", "jpeg_size_kb", "total"]
    for line, path, k in zip(lines[1:], pngs, kb, strict=True):
        cells = line.split()
        assert cells[0] == str(path)
        assert [float(c) for c in cells[1:]] == pytest.approx([-k / 500, k, -k / 500 + 0.5 * k], abs=1e-4)

    prompts = [arg for i in range(3) for arg in ("--prompt", f"prompt {i}")]
    out = rewardflow("score", *map(str, pngs), *prompts, "--reward", "jpeg_incompressibility", "--json", env=env)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(p) for p in pngs]
    assert [r["prompt"] for r in rows] == ["prompt 0", "prompt 1", "prompt 2"]
    for row, k in zip(rows, kb, strict=True):
        assert row["total"] == pytest.approx(k / 500)
        assert row["rewards"] == {"jpeg_incompressibility": pytest.approx(k / 500)}
        assert row["scores"]["jpeg"] == pytest.approx(
            {"compressibility": -k / 500, "incompressibility": k / 500, "size_kb": k}
        )
        assert row["errors"] == {}

    down = rewardflow("stack", "down", env=env)
    assert down.returncode == 0 and "stopped: jpeg" in down.stdout
    assert not pid_alive(pid)
    assert not Path(env["REWARDFLOW_STACK_FILE"]).exists()
    after = rewardflow("stack", "status", env=env)
    assert after.returncode == 1 and "no stack is running" in after.stdout


@pytest.mark.slow
def test_stack_up_again_keeps_the_running_service(running_stack: dict[str, str]) -> None:
    before = load_stack_file(Path(running_stack["REWARDFLOW_STACK_FILE"]))
    again = rewardflow("stack", "up", "jpeg", env=running_stack)
    assert again.returncode == 0 and "already up" in again.stdout
    assert load_stack_file(Path(running_stack["REWARDFLOW_STACK_FILE"])) == before


@pytest.mark.slow
def test_stack_up_says_in_one_line_why_a_service_died(env: dict[str, str]) -> None:
    broken = {**env, "REWARDFLOW_MAX_BATCH_SIZE": "-1"}  # the service refuses to start
    result = rewardflow("stack", "up", "jpeg", "--port-base", str(free_port()), env=broken)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert "exited while starting (exit code 2): error: REWARDFLOW_MAX_BATCH_SIZE='-1': input should be" in line
    assert "Traceback" not in result.stderr and "(log: " in line
    assert not Path(env["REWARDFLOW_STACK_FILE"]).exists()


def test_service_down_is_one_line_naming_reward_and_url(env: dict[str, str], pngs: list[Path]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = rewardflow("score", str(pngs[0]), "--prompt", "x", "--reward", f"jpeg_size_kb={url}", env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "jpeg_size_kb" in lines[0] and url in lines[0]


def test_score_without_url_or_stack_says_how_to_get_one(env: dict[str, str], pngs: list[Path]) -> None:
    result = rewardflow("score", str(pngs[0]), "--prompt", "x", "--reward", "jpeg", env=env)
    assert result.returncode == 2
    assert "rewardflow stack up jpeg" in result.stderr and "Traceback" not in result.stderr


def test_unknown_service_for_serve_lists_known_ones(env: dict[str, str]) -> None:
    result = rewardflow("serve", "nosuch", env=env)
    assert result.returncode == 2 and "'nosuch'" in result.stderr and "jpeg" in result.stderr


def test_train_dispatches_to_the_trainer_or_says_it_is_missing(env: dict[str, str]) -> None:
    result = rewardflow("train", "--help", env=env)
    if importlib.util.find_spec("rewardflow_trainer") is None or _trainer_cli_missing():
        assert result.returncode == 2 and "trainer is not available" in result.stderr
    else:
        assert result.returncode == 0 and "usage" in result.stdout.lower()


def _trainer_cli_missing() -> bool:
    try:
        return importlib.util.find_spec("rewardflow_trainer.cli") is None
    except ImportError:
        return True


def test_reward_options_map_to_endpoints_and_weights() -> None:
    stack = {"jpeg": ["http://127.0.0.1:8100"]}
    endpoints, weights = parse_rewards(["jpeg", "jpeg_size_kb"], ["jpeg=-2.5"], stack)
    assert endpoints == {"jpeg": ["http://127.0.0.1:8100"]}
    assert weights == {"jpeg": -2.5, "jpeg_size_kb": 1.0}
    endpoints, _ = parse_rewards(["jpeg_size_kb=http://a:1, http://b:2", "ocr=http://c:3"], [], {})
    assert endpoints == {"jpeg": ["http://a:1", "http://b:2"], "ocr": ["http://c:3"]}


def test_weight_for_a_reward_not_requested_is_refused() -> None:
    with pytest.raises(UserError, match=r"'ocr' is not one of the --reward names \(jpeg\)"):
        parse_rewards(["jpeg=http://a:1"], ["ocr=1"], {})
    with pytest.raises(UserError, match="expected NAME=NUMBER"):
        parse_rewards(["jpeg=http://a:1"], ["jpeg=heavy"], {})


def test_table_marks_failed_items_and_lists_their_errors() -> None:
    rows = [
        {"image": "a.png", "rewards": {"jpeg": -0.25}, "total": -0.25, "errors": {}},
        {"image": "bb.png", "rewards": {"jpeg": None}, "total": None,
         "errors": {"jpeg": {"code": "bad_image", "message": "cannot decode"}}},
    ]  # fmt: skip
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["image", "jpeg", "total"]
    assert lines[1].split() == ["a.png", "-0.2500", "-0.2500"]
    assert lines[2].split() == ["bb.png", "error", "error"]
    assert lines[3] == "bb.png: jpeg failed: bad_image: cannot decode"


def test_eval_dispatches_to_the_report_and_refuses_unknown_reports(capsys) -> None:
    from rewardflow.cli import main

    assert main(["eval", "nosuch"]) == 2
    assert "unknown benchmark 'nosuch' (known benchmarks: geneval)" in capsys.readouterr().err
    assert main(["eval"]) == 2
    assert "rewardflow eval {geneval}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's --help of the report itself
        main(["eval", "geneval", "--help"])
    assert exit_info.value.code == 0
    assert "--metadata" in capsys.readouterr().out
