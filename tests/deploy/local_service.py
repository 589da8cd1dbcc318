"""A reward service as a local process on a free 127.0.0.1 port, for the deploy tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running(
    command: Sequence[str], port: int, timeout_s: float = 60.0, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    """Start `command` with REWARDFLOW_HOST/PORT (and `env`) set, yield its URL once /readyz is 200, stop it after."""
    env = {**os.environ, **(env or {}), "REWARDFLOW_HOST": "127.0.0.1", "REWARDFLOW_PORT": str(port)}
    proc = subprocess.Popen(list(command), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                raise AssertionError(f"{command} exited with {proc.returncode}: {stderr[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/readyz", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, f"{command} not ready on port {port} within {timeout_s} s"
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
