"""The local stack: reward services as detached processes on 127.0.0.1, found through a stack file.

Services are found by name through their entry points (`rewardflow_kit.registry`); each replica runs as
`python -m rewardflow_kit NAME --host 127.0.0.1 --port P`. The stack file ($REWARDFLOW_STACK_FILE or
~/.cache/rewardflow/stack.json) holds {"services": {"jpeg": {"urls": [...], "pids": [...], "logs": [...]}}};
the client and the trainer read endpoints from it with `read_stack_file()`. This module imports neither
FastAPI nor uvicorn: the CLI and the trainer import it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rewardflow_kit.registry import scorer_spec

# How start_stack runs a replica (before --host/--port); also what marks a process as ours in /proc.
SERVE_MODULE = "rewardflow_kit"
EXIT_LOAD_FAILED = 3
"""A service's exit code when its model could not load (rewardflow_kit.server, which imports uvicorn)."""


class StackError(RuntimeError):
    """A service of the stack did not come up, or the stack file is unusable."""


def serve(name: str, host: str | None = None, port: int | None = None) -> int:
    """Run one service in the foreground (blocks until interrupted); unset values come from REWARDFLOW_* env.
    Returns the exit code (3: the model failed to load); ValueError for an unknown name or a bad setting."""
    spec = scorer_spec(name)
    from pydantic import ValidationError

    from rewardflow_kit.server import serve_spec  # pulls in FastAPI and uvicorn: only load them to serve
    from rewardflow_kit.settings import ServiceSettings, settings_error_line

    overrides: dict[str, Any] = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
    try:
        settings = ServiceSettings(**overrides)
    except ValidationError as exc:
        raise ValueError(settings_error_line(exc)) from None
    return serve_spec(spec, settings)


def serve_command(name: str, port: int) -> list[str]:
    """The command line of one stack replica: this interpreter serving `name` on 127.0.0.1:`port`."""
    return [sys.executable, "-m", SERVE_MODULE, name, "--host", "127.0.0.1", "--port", str(port)]


def stack_file_path() -> Path:
    """Where the stack file lives: $REWARDFLOW_STACK_FILE or ~/.cache/rewardflow/stack.json."""
    env = os.environ.get("REWARDFLOW_STACK_FILE")
    return Path(env) if env else Path.home() / ".cache" / "rewardflow" / "stack.json"


def load_stack_file(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The stack file's services map ({} when there is no file)."""
    path = path or stack_file_path()
    if not path.exists():
        return {}
    try:
        services = json.loads(path.read_text())["services"]
    except (ValueError, KeyError, TypeError) as exc:
        raise StackError(
            f"stack file {path} is not a valid stack file ({exc}); remove it and run `rewardflow stack up`"
        ) from None
    if not isinstance(services, dict):
        raise StackError(f"stack file {path}: 'services' is not a map; remove it and run `rewardflow stack up`")
    return services


def read_stack_file(path: Path | None = None) -> dict[str, list[str]]:
    """Service name -> replica URLs of the running local stack ({} when none is up)."""
    return {name: list(entry["urls"]) for name, entry in load_stack_file(path).items()}


def write_stack_file(services: Mapping[str, Mapping[str, Any]], path: Path | None = None) -> Path:
    """Write the services map atomically (readers never see half a file); remove the file when empty."""
    path = path or stack_file_path()
    if not services:
        path.unlink(missing_ok=True)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"services": services}, indent=2) + "\n")
    tmp.replace(path)
    return path


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def pick_ports(count: int, base: int | None, taken: set[int] | None = None) -> list[int]:
    """`count` ports free on 127.0.0.1: from `base` upward skipping busy ones, or any free ones if base is None."""
    taken = set(taken or ())
    ports: list[int] = []
    candidate = base
    while len(ports) < count:
        if candidate is None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
        else:
            port, candidate = candidate, candidate + 1
            if port > 65535:
                raise StackError(f"no free port between {base} and 65535")
        if port not in taken and _port_free(port):
            ports.append(port)
            taken.add(port)
    return ports


def log_tail(path: str | Path, lines: int = 20) -> str:
    """The last lines of a log file ("" if it does not exist)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_ours(pid: int) -> bool:
    # A pid from an old stack file may since belong to an unrelated process: only signal a rewardflow one.
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f"-m\x00{SERVE_MODULE}\x00".encode() in f.read()  # as serve_command starts them
    except FileNotFoundError:
        return not Path("/proc/self").exists() and pid_alive(pid)
    except OSError:
        return False


def stop_pids(pids: Sequence[int], grace_s: float = 10.0) -> None:
    """SIGTERM each (still ours) process group, SIGKILL whatever is left after the grace period."""
    alive = [p for p in pids if pid_alive(p) and _is_ours(p)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive:
            try:
                os.killpg(pid, sig)  # each service leads its own session, so its group is its pid
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + (grace_s if sig == signal.SIGTERM else 5.0)
        while alive and time.monotonic() < deadline:
            _reap(alive)
            alive = [p for p in alive if pid_alive(p)]
            if alive:
                time.sleep(0.05)
        if not alive:
            return


def _reap(pids: Sequence[int]) -> None:
    for pid in pids:  # our own children linger as zombies until waited for
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def ready_state(url: str, timeout_s: float = 2.0) -> str:
    """ "ready", "not ready (HTTP 503)" or "down (<error>)" from the service's /readyz."""
    try:
        response = httpx.get(f"{url}/readyz", timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"down ({type(exc).__name__})"
    return "ready" if response.status_code == 200 else f"not ready (HTTP {response.status_code})"


@dataclass
class ReplicaStatus:
    """One replica as `rewardflow stack status` shows it: readiness, in-flight requests, answers by status."""

    service: str
    url: str
    pid: int
    state: str  # ready_state(): "ready", "not ready (HTTP 503)", "down (...)"
    in_flight: int | None = None  # None: /metrics did not answer
    requests: dict[str, int] = field(default_factory=dict)  # HTTP status -> score requests answered with it

    @property
    def errors(self) -> int:
        """Score requests answered with an error: 4xx (bad input, overload; 499 client gone) and 5xx."""
        return sum(n for code, n in self.requests.items() if code[:1] in "45")

    def line(self) -> str:
        flight = "?" if self.in_flight is None else str(self.in_flight)
        served = " ".join(f"{code}:{n}" for code, n in sorted(self.requests.items())) or "none"
        return (
            f"{self.service}  {self.url}  pid {self.pid}  {self.state}  in-flight {flight}  "
            f"errors {self.errors}  requests {served}"
        )


_REQUESTS = re.compile(r'^rewardflow_requests_total\{[^}]*code="(\d+)"[^}]*\} (\S+)$', re.MULTILINE)
_IN_FLIGHT = re.compile(r"^rewardflow_in_flight_requests\{[^}]*\} (\S+)$", re.MULTILINE)


def replica_status(service: str, url: str, pid: int, timeout_s: float = 2.0) -> ReplicaStatus:
    """Readiness from /readyz, in-flight requests and answers by status from /metrics (the kit's names)."""
    status = ReplicaStatus(service, url, pid, ready_state(url, timeout_s))
    try:
        text = httpx.get(f"{url}/metrics", timeout=timeout_s).text
    except httpx.HTTPError:
        return status
    if (found := _IN_FLIGHT.search(text)) is not None:
        status.in_flight = int(float(found.group(1)))
    status.requests = {code: int(float(n)) for code, n in _REQUESTS.findall(text)}
    return status


def stack_status(path: Path | None = None) -> list[ReplicaStatus]:
    """Every replica of the stack file's services, in the file's order."""
    return [
        replica_status(name, url, pid)
        for name, entry in load_stack_file(path).items()
        for url, pid in zip(entry["urls"], entry["pids"], strict=True)
    ]


@dataclass
class Stack:
    """Services started by `start_stack`; as a context manager it stops them on exit."""

    services: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def endpoints(self) -> dict[str, list[str]]:
        return {name: list(entry["urls"]) for name, entry in self.services.items()}

    def stop(self, grace_s: float = 10.0) -> None:
        """Terminate every process this stack started."""
        stop_pids([pid for entry in self.services.values() for pid in entry["pids"]], grace_s)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_stack(
    names: Sequence[str],
    port_base: int | None = None,
    replicas: int = 1,
    ready_timeout_s: float = 120.0,
    log_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Stack:
    """Start `replicas` detached processes per service on 127.0.0.1 and wait until each is ready.

    Ports come from `port_base` upward (busy ones skipped) or, with None, from the OS. On failure every
    process started here is stopped and StackError shows the tail of the failing service's log.
    """
    for name in names:
        scorer_spec(name)
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    log_dir = log_dir or stack_file_path().parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = iter(pick_ports(len(names) * replicas, port_base))
    child_env = {**os.environ, **(env or {})}
    stack = Stack()
    try:
        for name in names:
            entry: dict[str, Any] = {"urls": [], "pids": [], "logs": []}
            for _ in range(replicas):
                port = next(ports)
                log = log_dir / f"{name}-{port}.log"
                with open(log, "ab") as out:
                    proc = subprocess.Popen(
                        serve_command(name, port),
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=child_env,
                        start_new_session=True,  # detached: survives the CLI and its terminal's Ctrl-C
                    )
                entry["urls"].append(f"http://127.0.0.1:{port}")
                entry["pids"].append(proc.pid)
                entry["logs"].append(str(log))
            stack.services[name] = entry
        _wait_ready(stack, ready_timeout_s)
    except BaseException:
        stack.stop(grace_s=2.0)
        raise
    return stack


def _wait_ready(stack: Stack, timeout_s: float) -> None:
    """Until every replica's /readyz is 200; StackError as soon as one exits or reports a failed load."""
    pending = [
        (name, url, pid, log)
        for name, e in stack.services.items()
        for url, pid, log in zip(e["urls"], e["pids"], e["logs"], strict=True)
    ]
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=2.0) as http:
        while pending:
            for item in list(pending):
                name, url, pid, log = item
                if not pid_alive(pid):
                    raise StackError(f"service {name} at {url} {exit_reason(name, pid, log)} (log: {log})")
                try:
                    reply = http.get(f"{url}/readyz")
                except httpx.HTTPError:
                    continue
                if reply.status_code == 200:
                    pending.remove(item)
                elif (failure := load_failure(reply)) is not None:
                    raise StackError(f"service {name} at {url} {failure} (log: {log})")
            if pending and time.monotonic() > deadline:
                name, url, _, log = pending[0]
                raise StackError(
                    f"service {name} at {url} not ready after {timeout_s:.0f}s; last line of its log: "
                    f"{last_line(log)} (log: {log})"
                )
            if pending:
                time.sleep(0.1)


def exit_reason(name: str, pid: int, log: str | Path) -> str:
    """Why a replica that exited while starting did: 'failed to load: <cause>' for a model that could not load
    (the kit's exit code 3 and last line '<service>: <cause>'), else its exit code and last log line."""
    code, line = _reap_code(pid), last_line(log)
    if code == EXIT_LOAD_FAILED and line.startswith(f"{name}: "):
        return f"failed to load: {line[len(name) + 2 :]}"
    status = f" (exit code {code})" if code is not None else ""
    return f"exited while starting{status}: {line}"


def load_failure(reply: httpx.Response) -> str | None:
    """The reason a /readyz reply gives for a failed load ('failed to load: ...'), or None (ready or loading)."""
    try:
        body = reply.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("status") != "failed":
        return None
    error = str(body.get("error") or "failed to load")
    return re.sub(r"^service \S+ ", "", error)  # the kit's "service NAME failed to load: ..."


def last_line(path: str | Path) -> str:
    """The last non-empty line of a log file: the reason a service that exits prints last ("" if none)."""
    lines = [line.strip() for line in log_tail(path, 50).splitlines() if line.strip()]
    return lines[-1] if lines else "(its log is empty)"


def _reap_code(pid: int) -> int | None:
    """The exit code of our own child `pid` once it has exited (None if it is not our child)."""
    try:
        reaped, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return os.waitstatus_to_exitcode(status) if reaped == pid else None


def stack_up(
    names: Sequence[str], port_base: int | None = 8100, replicas: int = 1, path: Path | None = None
) -> dict[str, dict[str, Any]]:
    """Start the services not already up and record them in the stack file; returns the new entries."""
    current = {n: e for n, e in load_stack_file(path).items() if any(pid_alive(p) for p in e["pids"])}
    missing = [n for n in dict.fromkeys(names) if n not in current]
    for name in missing:
        scorer_spec(name)
    stack = (
        start_stack(missing, port_base, replicas, log_dir=(path or stack_file_path()).parent / "logs")
        if missing
        else Stack()
    )
    write_stack_file({**current, **stack.services}, path)
    return stack.services


def stack_down(names: Sequence[str] = (), path: Path | None = None, grace_s: float = 10.0) -> list[str]:
    """Stop the named services (all if none named), update or remove the stack file; returns the names stopped."""
    services = load_stack_file(path)
    chosen = list(names) or list(services)
    unknown = [n for n in chosen if n not in services]
    if unknown:
        raise StackError(f"not in the stack: {', '.join(unknown)}; running: {', '.join(services) or '(none)'}")
    stop_pids([pid for n in chosen for pid in services[n]["pids"]], grace_s)
    write_stack_file({n: e for n, e in services.items() if n not in chosen}, path)
    return chosen
