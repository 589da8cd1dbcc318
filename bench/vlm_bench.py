"""VLM judge services' throughput: images/s over HTTP for unifiedreward, qwenvl and deqa with tiny judges.

    .venv/bin/python bench/vlm_bench.py [--images 8] [--size 512] [--repeats 3] [--services unifiedreward,qwenvl,deqa]

Each service runs as `python -m rewardflow_kit NAME` on 127.0.0.1 with the in-process backend and a tiny Qwen2-VL
from rewardflow_vlm.tiny (2 layers, 64 wide; images become at most 16 vision tokens): unifiedreward and qwenvl
with a judge scripted to answer 'Final Score: 4' / '<Score>4</Score>' (so every generate call writes the same
few tokens), deqa with random weights (one forward pass, no generation). `unifiedreward-served` asks the
tests' chat-completions server (tests/services/chat_completions_server.py) instead: the served backend's own cost
(PNG data URLs at 512x512, HTTP, parsing). One request of --images images per repeat; the median is reported.
The numbers measure the services' overhead with a toy model, not a 7B judge's speed.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rewardflow_proto import MSGPACK, ScoreRequest, decode_response, encode_request
from rewardflow_vlm.tiny import write_tiny_qwen2vl

REPO = Path(__file__).resolve().parents[1]
CHAT_SERVER = REPO / "tests" / "services" / "chat_completions_server.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"not ready within {timeout_s} s")


def start(argv: list[str], env: dict[str, str], ready_path: str, log: Path, port: int) -> subprocess.Popen:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
    wait_ready(f"http://127.0.0.1:{port}{ready_path}", proc, log)
    return proc


def service_env(work: Path, service: str, port: int, chat_url: str | None) -> dict[str, str]:
    env = {"REWARDFLOW_HOST": "127.0.0.1", "REWARDFLOW_PORT": str(port), "REWARDFLOW_LOG_LEVEL": "warning"}
    if chat_url is not None:
        return env | {"REWARDFLOW_VLM_BACKEND": "served", "REWARDFLOW_VLM_URL": chat_url, "REWARDFLOW_VLM_API_KEY": "k"}
    answer = {"unifiedreward": "Final Score: 4", "qwenvl": "<Thought>fine</Thought><Score>4</Score>"}.get(service)
    model = write_tiny_qwen2vl(work / f"{service}-judge", answer=answer)
    return env | {"REWARDFLOW_MODEL": str(model), "REWARDFLOW_VLM_BACKEND": "in-process", "REWARDFLOW_DEVICE": "cpu"}


def measure(url: str, images: np.ndarray, repeats: int) -> float:
    """Median images/s of one request of all the images."""
    times = []
    body = encode_request(ScoreRequest(images=images, prompts=["a red car"] * len(images)), MSGPACK)
    with httpx.Client(base_url=url, timeout=600, headers={"content-type": MSGPACK}) as client:
        for repeat in range(repeats + 1):  # the first is a warm-up
            started = time.perf_counter()
            reply = client.post("/v1/score", content=body)
            elapsed = time.perf_counter() - started
            response = decode_response(reply.content, MSGPACK)
            assert reply.status_code == 200 and all(e is None for e in response.errors), reply.content[:500]
            if repeat:
                times.append(elapsed)
    return len(images) / statistics.median(times)


def bench(name: str, work: Path, images: np.ndarray, repeats: int) -> float:
    service = name.removesuffix("-served")
    procs = []
    chat_url = None
    try:
        if name.endswith("-served"):
            chat_port = free_port()
            argv = [
                sys.executable,
                str(CHAT_SERVER),
                "--port",
                str(chat_port),
                "--model",
                "CodeGoat24/UnifiedReward-7b-v1.5",
            ]
            procs.append(start([*argv, "--api-key", "k"], {}, "/v1/models", work / "chat.log", chat_port))
            chat_url = f"http://127.0.0.1:{chat_port}/v1"
        port = free_port()
        env = service_env(work, service, port, chat_url)
        procs.append(
            start([sys.executable, "-m", "rewardflow_kit", service], env, "/readyz", work / f"{name}.log", port)
        )
        return measure(f"http://127.0.0.1:{port}", images, repeats)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--services", default="unifiedreward,qwenvl,deqa,unifiedreward-served")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.services.split(","):
            rate = bench(name, Path(tmp), images, args.repeats)
            print(f"{name:22s} {rate:8.2f} images/s  ({args.images} x {args.size}px per request, tiny judge)")


if __name__ == "__main__":
    main()
