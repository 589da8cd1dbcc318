"""Shared test set-up: markers, and `service_process` (real reward services as uvicorn subprocesses).

Other fixtures live next to the tests that use them (tests/<part>/conftest.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

TESTS_DIR = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds; CI runs it anyway")
    config.addinivalue_line("markers", "e2e: drives several processes end to end")
    config.addinivalue_line("markers", "gpu: needs CUDA; runs only where torch.cuda.is_available()")


def torch_cuda_available() -> bool:
    """Whether torch is installed and sees a CUDA device (REWARDFLOW_PRETEND_NO_CUDA=1: never, for tests)."""
    if os.environ.get("REWARDFLOW_PRETEND_NO_CUDA") == "1":
        return False
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = torch_cuda_available()
    skip_gpu = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


# With REWARDFLOW_FAIL_ON_SKIP=1 (what `make test` sets) a skip is a failure, except a `gpu` test on a
# machine without CUDA: CI must not count a test that did not run, nor miss one that stopped running.
_FAIL_ON_SKIP = "REWARDFLOW_FAIL_ON_SKIP"


def _fail_skip(report: pytest.CollectReport | pytest.TestReport, where: str) -> None:
    report.outcome = "failed"
    report.longrepr = f"{where} was skipped but {_FAIL_ON_SKIP}=1 requires it to run: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get(_FAIL_ON_SKIP) == "1" and report.skipped:
        _fail_skip(report, collector.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    # A gpu test's skip is silent only when CUDA is absent; with CUDA any skip inside it is a failure too.
    silent = "gpu" in item.keywords and not torch_cuda_available()
    if os.environ.get(_FAIL_ON_SKIP) == "1" and report.skipped and not silent:
        _fail_skip(report, item.nodeid)


# ---------------------------------------------------------------- reward services as real processes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServiceProcess:
    """A reward service running as `python -m ...` on 127.0.0.1; `url` has no trailing slash."""

    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        """Everything the service wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_for(self, path: str = "/readyz", timeout_s: float = 60.0) -> None:
        """Poll GET `path` until it answers 200; raise with the service log if it dies or times out."""
        deadline = time.monotonic() + timeout_s
        # One client for the whole wait: a bare httpx.get builds a new SSL context each time (~40 ms of CPU), which
        # at 20 polls a second took half a core from the service starting up.
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if not self.alive():
                    raise RuntimeError(
                        f"service on port {self.port} exited with {self.process.returncode}:\n{self.log()}"
                    )
                try:
                    if http.get(self.url + path).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"service on port {self.port}: {path} not 200 after {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


class ServiceStarter:
    """Starts services and remembers them so the fixture stops every one of them afterwards."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[ServiceProcess] = []

    def __call__(
        self,
        target: str = "jpeg",
        env: dict[str, str] | None = None,
        wait: str | None = "/readyz",
        timeout_s: float = 60.0,
    ) -> ServiceProcess:
        """Start `python -m rewardflow_kit TARGET`: a service name (its entry point) or a "module:Class".

        `env` adds REWARDFLOW_* (or other) variables; inherited REWARDFLOW_* variables are dropped so
        the caller's shell cannot change a test. tests/services is on PYTHONPATH, so test scorers
        such as "scorers:ProbeScorer" import. `wait` is the path polled until 200 (None: don't wait).
        """
        for _attempt in range(3):  # another process may grab the free port before the service binds it
            service = self._spawn(target, env or {})
            if wait is None:
                return service
            try:
                service.wait_for(wait, timeout_s)
                return service
            except RuntimeError:
                if "address already in use" not in service.log().lower():
                    raise
        raise RuntimeError(f"could not start {target}: ports kept being taken")

    def _spawn(self, target: str, extra_env: dict[str, str]) -> ServiceProcess:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDFLOW_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR / "services"), env.get("PYTHONPATH")]))
        env.update({"REWARDFLOW_HOST": "127.0.0.1", "REWARDFLOW_PORT": str(port)})
        env.update(extra_env)
        argv = [sys.executable, "-m", "rewardflow_kit", target]
        log_path = self.log_dir / f"{target.replace(':', '.')}-{port}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(argv, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        service = ServiceProcess(url=f"http://127.0.0.1:{port}", port=port, process=process, log_path=log_path, env=env)
        self.started.append(service)
        return service

    def stop_all(self) -> None:
        for service in self.started:
            service.stop()


@pytest.fixture
def service_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServiceProcess]]:
    """Factory: `service_process("jpeg", env={...})` -> a ready ServiceProcess, stopped after the test."""
    starter = ServiceStarter(tmp_path_factory.mktemp("services"))
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def module_service_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServiceProcess]]:
    """Like `service_process`, but the services live until the test module ends (share one per module)."""
    starter = ServiceStarter(tmp_path_factory.mktemp("services"))
    yield starter
    starter.stop_all()
