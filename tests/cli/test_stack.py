"""The local stack's Python API: ports, the stack file, stopping processes, start_stack as a context manager."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from rewardflow_kit.stack import (
    StackError,
    load_stack_file,
    pick_ports,
    pid_alive,
    read_stack_file,
    start_stack,
    stop_pids,
    write_stack_file,
)


def test_busy_ports_are_skipped() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        ports = pick_ports(2, port)
    assert port not in ports and len(set(ports)) == 2 and all(p > port for p in ports)


def test_os_picked_ports_are_distinct_and_respect_taken() -> None:
    first = pick_ports(3, None)
    assert len(set(first)) == 3
    assert not set(pick_ports(3, None, taken=set(first))) & set(first)


def test_stack_file_round_trip_and_absence(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "stack.json"
    assert read_stack_file(path) == {}
    entry = {"urls": ["http://127.0.0.1:8100", "http://127.0.0.1:8101"], "pids": [1, 2], "logs": ["x", "y"]}
    write_stack_file({"jpeg": entry}, path)
    assert read_stack_file(path) == {"jpeg": entry["urls"]}
    assert load_stack_file(path) == {"jpeg": entry}
    write_stack_file({}, path)
    assert not path.exists()


def test_stack_file_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.json"
    monkeypatch.setenv("REWARDFLOW_STACK_FILE", str(path))
    write_stack_file({"jpeg": {"urls": ["http://h:1"], "pids": []}})
    assert path.exists() and read_stack_file() == {"jpeg": ["http://h:1"]}


def test_corrupt_stack_file_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    path.write_text("{not json")
    with pytest.raises(StackError, match="remove it and run `rewardflow stack up`"):
        read_stack_file(path)


def test_stop_leaves_a_process_that_is_not_ours_alone() -> None:
    # A stale stack file may hold a pid that now belongs to something else.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stop_pids([stranger.pid], grace_s=0.2)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_unknown_service_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown service 'nosuch' \(known services: .*\bjpeg\b"):
        start_stack(["jpeg", "nosuch"], log_dir=tmp_path)


@pytest.mark.slow
def test_start_stack_serves_until_the_context_ends(tmp_path: Path) -> None:
    with start_stack(["jpeg"], replicas=2, log_dir=tmp_path) as stack:
        urls = stack.endpoints["jpeg"]
        pids = stack.services["jpeg"]["pids"]
        assert len(set(urls)) == 2
        for url in urls:
            assert httpx.get(f"{url}/v1/info").json()["name"] == "jpeg"
        assert all(Path(log).exists() for log in stack.services["jpeg"]["logs"])
    assert not any(pid_alive(pid) for pid in pids)
    for url in urls:
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz")


def test_the_stack_and_the_cli_import_no_web_framework() -> None:
    # The trainer and `rewardflow` import the stack: FastAPI and uvicorn load only in a service process.
    code = (
        "import sys, rewardflow_kit.stack, rewardflow.cli; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn', 'starlette')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


def test_stack_processes_serve_by_name_and_are_recognised_as_ours(tmp_path: Path) -> None:
    from rewardflow_kit.stack import _is_ours, serve_command

    assert serve_command("jpeg", 8123)[1:] == ["-m", "rewardflow_kit", "jpeg", "--host", "127.0.0.1", "--port", "8123"]
    with start_stack(["jpeg"], log_dir=tmp_path) as stack:
        [pid] = stack.services["jpeg"]["pids"]
        assert _is_ours(pid)
        assert "log" not in stack.services["jpeg"]
    assert not _is_ours(pid)
