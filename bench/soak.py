"""Soak: N concurrent clients for M minutes against each CPU service, valid and invalid bodies mixed.

    .venv/bin/python bench/soak.py [--services jpeg,geneval] [--clients 32] [--minutes 5] [--invalid 0.3]

Each service runs as a real process on 127.0.0.1 (the local stack). Every client loops until the time is
up, sending a valid request (a few small random images) or, with probability --invalid, one of several
broken bodies (not msgpack, truncated, an unknown version, an empty batch, NaN metadata in JSON, a wrong
content type, an image whose declared shape does not match its bytes). Per service it reports the
requests served by status, p50/p99 latency of the valid ones, the number of 5xx answers (must be 0), the
service's RSS over time (first, max, last) and whether /healthz and /readyz answer 200 at the end.
geneval runs its exact shapes detector, and its valid requests carry the shapes world's GenEval metadata.
In full (--clients 32 --minutes 5 on the 2-core machine) each service gets well over 10,000 requests;
the exit code is 1 when a 5xx was seen, a request failed to connect or the service is not healthy after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgpack
import numpy as np
from rewardflow_kit.stack import start_stack
from rewardflow_proto import JSON, MSGPACK, ScoreRequest, encode_request

SHAPES_METADATA = Path(__file__).resolve().parents[1] / "trainer/rewardflow_trainer/weights/shapes-sd3/prompts"
SERVICE_ENV = {"geneval": {"REWARDFLOW_GENEVAL_DETECTOR": "shapes"}}
"""Settings a service is soaked with: geneval runs its exact shapes detector (no model to download)."""


def service_metadata(name: str) -> list[dict]:
    """Per-image metadata entries a service needs in a valid request (geneval: the shapes world's prompts)."""
    if name != "geneval":
        return []
    return [json.loads(line) for line in (SHAPES_METADATA / "test_metadata.jsonl").read_text().splitlines() if line]


def valid_body(rng: random.Random, metadata: list[dict] | None = None) -> bytes:
    """A request of 1-4 random 32x32 images (with GenEval metadata entries when the service needs them)."""
    n = rng.randint(1, 4)
    images = np.random.default_rng(rng.randrange(2**32)).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    if not metadata:
        return encode_request(ScoreRequest(images=images, prompts=[f"prompt {i}" for i in range(n)]))
    entries = [rng.choice(metadata) for _ in range(n)]
    prompts = [entry["prompt"] for entry in entries]
    return encode_request(ScoreRequest(images=images, prompts=prompts, metadata=entries))


def invalid_bodies() -> list[tuple[str, bytes, str]]:
    """(what, body, content type) of requests a service must refuse with a 4xx."""
    good = valid_body(random.Random(0))
    raw = {"format": "raw", "dtype": "uint8", "shape": [1, 8, 8, 3], "data": b"\0" * 10}
    return [
        ("not msgpack", b"\xc1\xc1\xc1 definitely not msgpack", MSGPACK),
        ("truncated", good[: len(good) // 2], MSGPACK),
        ("version 9", msgpack.packb({"version": 9, "images": [], "prompts": []}), MSGPACK),
        ("empty batch", msgpack.packb({"version": 1, "id": "", "images": [], "prompts": []}), MSGPACK),
        ("shape vs bytes", msgpack.packb({"version": 1, "id": "", "images": raw, "prompts": ["p"]}), MSGPACK),
        ("NaN in JSON", b'{"version": 1, "images": [], "prompts": ["p"], "metadata": [{"x": NaN}]}', JSON),
        ("wrong content type", good, "text/plain"),
    ]


@dataclass
class Tally:
    """What the clients saw."""

    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # valid requests answered 200
    transport_errors: Counter = field(default_factory=Counter)
    rss_mb: list[float] = field(default_factory=list)


async def client(url: str, until: float, invalid: float, seed: int, tally: Tally, metadata: list[dict]) -> None:
    rng = random.Random(seed)
    broken = invalid_bodies()
    async with httpx.AsyncClient(timeout=60) as http:
        while time.monotonic() < until:
            is_valid = rng.random() >= invalid
            _, body, content_type = ("valid", valid_body(rng, metadata), MSGPACK) if is_valid else rng.choice(broken)
            started = time.perf_counter()
            try:
                reply = await http.post(f"{url}/v1/score", content=body, headers={"content-type": content_type})
            except httpx.HTTPError as exc:
                tally.transport_errors[type(exc).__name__] += 1
                continue
            tally.statuses[reply.status_code] += 1
            if is_valid and reply.status_code == 200:
                tally.latencies.append(time.perf_counter() - started)


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def watch_rss(pid: int, until: float, tally: Tally) -> None:
    while time.monotonic() < until:
        tally.rss_mb.append(rss_mb(pid))
        await asyncio.sleep(1.0)


async def soak(url: str, pid: int, clients: int, seconds: float, invalid: float, metadata: list[dict]) -> Tally:
    tally = Tally()
    until = time.monotonic() + seconds
    await asyncio.gather(
        watch_rss(pid, until, tally), *(client(url, until, invalid, i, tally, metadata) for i in range(clients))
    )
    tally.rss_mb.append(rss_mb(pid))
    return tally


def healthy(url: str) -> bool:
    return all(httpx.get(f"{url}{path}", timeout=10).status_code == 200 for path in ("/healthz", "/readyz"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", default="jpeg", help="comma-separated CPU services (default jpeg)")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--invalid", type=float, default=0.3, help="share of invalid bodies (default 0.3)")
    parser.add_argument("--logs", type=Path, default=Path("/tmp/rewardflow-soak"))
    args = parser.parse_args(argv)
    columns = ["service", "requests", "200", "4xx", "5xx", "transport errors", "p50 ms", "p99 ms"]
    print("| " + " | ".join([*columns, "RSS MiB first/max/last", "healthy"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    bad = False
    for name in args.services.split(","):
        with start_stack([name], log_dir=args.logs, ready_timeout_s=600, env=SERVICE_ENV.get(name)) as stack:
            url, pid = stack.endpoints[name][0], stack.services[name]["pids"][0]
            tally = asyncio.run(soak(url, pid, args.clients, args.minutes * 60, args.invalid, service_metadata(name)))
            ok = healthy(url)
        total = sum(tally.statuses.values())
        fours = sum(n for s, n in tally.statuses.items() if 400 <= s < 500)
        fives = sum(n for s, n in tally.statuses.items() if s >= 500)
        errors = sum(tally.transport_errors.values())
        rss = tally.rss_mb
        print(
            f"| {name} | {total} | {tally.statuses[200]} | {fours} | {fives} | {errors} | "
            f"{percentile(tally.latencies, 50) * 1000:.1f} | {percentile(tally.latencies, 99) * 1000:.1f} | "
            f"{rss[0]:.0f}/{max(rss):.0f}/{rss[-1]:.0f} | {'yes' if ok else 'NO'} |"
        )
        bad |= fives > 0 or errors > 0 or not ok
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
