"""CLIP-based rewards (pickscore, clipscore, aesthetic) on tiny random CLIPs: images/s over HTTP vs in-process.

For each service, in one run on the same machine: the scorer called directly (`score(Batch)` after
`load()`), then the same scorer as a real `python -m rewardflow_kit <name>` process scored through
RewardClient (msgpack, raw uint8) with the same batches. The ratio is the service tax (transport,
decode, micro-batching) relative to the model work, which on tiny models is mostly preprocessing.

    .venv/bin/python bench/clip_bench.py                    # 16 images of 512x512 per call, 8 calls
    .venv/bin/python bench/clip_bench.py --size 256 --batch 32 --calls 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from rewardflow_kit import Batch
from rewardflow_proto.client import RewardClient
from rewardflow_vision import ModelSettings
from rewardflow_vision.tiny import write_tiny_clip

SERVICES = ("pickscore", "clipscore", "aesthetic")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_scorer(name: str, env: dict[str, str]) -> Any:
    """The service's scorer built from `env` (the same settings the process reads), loaded."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        if name == "pickscore":
            from rewardflow_pickscore import PickScoreScorer

            scorer = PickScoreScorer(ModelSettings())
        elif name == "clipscore":
            from rewardflow_clipscore import ClipScoreScorer

            scorer = ClipScoreScorer(ModelSettings())
        else:
            from rewardflow_aesthetic.scorer import AestheticScorer, AestheticSettings

            scorer = AestheticScorer(AestheticSettings())
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    scorer.model_id = env["REWARDFLOW_MODEL"]
    scorer.load()
    return scorer


def start_service(
    name: str, env: dict[str, str], log_path: Path, timeout_s: float = 300
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDFLOW_")}
    full_env.update(env)
    full_env.update({"REWARDFLOW_HOST": "127.0.0.1", "REWARDFLOW_PORT": str(port), "REWARDFLOW_LOG_LEVEL": "warning"})
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "rewardflow_kit", name], env=full_env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise TimeoutError(f"{name} not ready after {timeout_s} s:\n{log_path.read_text()}")


def in_process_rate(scorer: Any, images: np.ndarray, prompts: list[str], calls: int) -> float:
    batch = Batch(images=list(images), prompts=prompts, metadata=[{}] * len(prompts), group_ids=[None] * len(prompts))
    scorer.score(batch)  # warm
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        scorer.score(batch)
        times.append(time.perf_counter() - started)
    return len(images) / statistics.median(times)


async def http_rate(name: str, url: str, images: np.ndarray, prompts: list[str], calls: int) -> float:
    async with RewardClient(endpoints={name: [url]}, weights={name: 1.0}, timeout_s=300) as client:
        await client.score(images, prompts)  # warm (connection, first batch)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            result = await client.score(images, prompts)
            times.append(time.perf_counter() - started)
            assert np.isfinite(result.total).all(), result.errors
    return len(images) / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=16, help="images per call")
    parser.add_argument("--calls", type=int, default=8, help="timed calls per mode (median reported)")
    parser.add_argument("--crop", type=int, default=224, help="the tiny CLIP's input size (real CLIPs: 224)")
    parser.add_argument("--services", nargs="+", default=list(SERVICES), choices=SERVICES)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.size, args.size, 3), dtype=np.uint8)
    prompts = [f"a photo of a cat {i % 4}" for i in range(args.batch)]  # groups repeat prompts
    shape = f"{args.batch} images of {args.size}x{args.size} per call, tiny CLIP at {args.crop}x{args.crop}"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {shape}, median of {args.calls} calls")
    print(f"{'service':<10} {'in-process img/s':>17} {'HTTP img/s':>11} {'HTTP / in-process':>18}")
    with tempfile.TemporaryDirectory(prefix="rewardflow-clip-bench-") as tmp:
        model_dir = write_tiny_clip(Path(tmp) / "clip", image_size=args.crop, projection_dim=16)
        head_path = Path(tmp) / "head.pth"
        from rewardflow_aesthetic.head import AestheticHead

        torch.save(AestheticHead(input_size=16).state_dict(), head_path)
        for name in args.services:
            env = {
                "REWARDFLOW_MODEL": str(model_dir),
                "REWARDFLOW_PROCESSOR": str(model_dir),
                "REWARDFLOW_HEAD": str(head_path),
                "REWARDFLOW_MAX_QUEUE_DELAY_MS": "0",
                "HF_HUB_OFFLINE": "1",
            }
            local = in_process_rate(make_scorer(name, env), images, prompts, args.calls)
            proc, url = start_service(name, env, Path(tmp) / f"{name}.log")
            try:
                remote = asyncio.run(http_rate(name, url, images, prompts, args.calls))
            finally:
                proc.terminate()
                proc.wait(10)
            print(f"{name:<10} {local:>17.1f} {remote:>11.1f} {remote / local:>18.2f}")


if __name__ == "__main__":
    main()
