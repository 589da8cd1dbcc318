"""Raw-socket clients and process probes for the hostile-client tests: partial uploads, RSS, metric values."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def rss_mb(pid: int) -> float:
    """The resident set size of process `pid` in MiB (VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def start_upload(port: int, declared: int, sent: bytes, content_type: str = "application/msgpack") -> socket.socket:
    """A connection that sends POST /v1/score headers declaring `declared` body bytes, then only `sent`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    head = (
        f"POST /v1/score HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode("ascii") + sent)
    return sock


def read_reply(sock: socket.socket, timeout_s: float) -> tuple[bytes, bool]:
    """Everything the server sends within `timeout_s`, and whether it closed the connection by then."""
    deadline = time.monotonic() + timeout_s
    received = b""
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def status_of(reply: bytes) -> int | None:
    """The status code of a raw HTTP/1.1 reply, or None if nothing arrived."""
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", reply)
    return int(match.group(1)) if match else None


def metric(url: str, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0 if the labelled sample does not exist yet)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.split()[-1])
    return 0.0


def healthz_ms(client: httpx.Client, url: str) -> float:
    """How long GET /healthz took on `client`'s kept-alive connection, in ms (a new httpx client alone costs
    ~50 ms); it must answer 200."""
    started = time.perf_counter()
    reply = client.get(url + "/healthz", timeout=30)
    assert reply.status_code == 200
    return (time.perf_counter() - started) * 1000


def assert_responsive(latencies: list[float], what: str) -> None:
    """/healthz stayed responsive: 95% of polls under 100 ms and none over 500 ms (a blocked event loop shows
    up as one poll as long as the block; the slack is for a 2-core machine shared with other work)."""
    ordered = sorted(latencies)
    assert len(ordered) >= 5, f"only {len(ordered)} /healthz polls while {what}"
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    assert p95 < 100 and ordered[-1] < 500, f"/healthz p95 {p95:.0f} ms, max {ordered[-1]:.0f} ms while {what}"


class PeakRss:
    """Samples a process's RSS every few ms in a thread; kills it once it exceeds `kill_above_mb` (a safety net
    so a test of a memory bomb never takes the machine down when the bomb goes off)."""

    def __init__(self, pid: int, kill_above_mb: float, kill: Callable[[], None]) -> None:
        self.pid = pid
        self.kill_above_mb = kill_above_mb
        self.kill = kill
        self.peak_mb = 0.0
        self.killed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                now = rss_mb(self.pid)
            except (OSError, RuntimeError):
                return  # the process is gone
            self.peak_mb = max(self.peak_mb, now)
            if now > self.kill_above_mb and not self.killed:
                self.killed = True
                self.kill()
                return
            time.sleep(0.005)

    @contextmanager
    def running(self) -> Iterator[PeakRss]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)
