"""ImageReward service throughput: images/s over HTTP vs in-process, side by side in one run.

    .venv/bin/python bench/imagereward_bench.py [--images 16] [--size 512] [--repeats 7]
    .venv/bin/python bench/imagereward_bench.py --arch released --device cuda --dtype float16   # on a GPU

`--arch tiny` (default): the tiny random model of the tests (ViT 32 wide, 2 blocks, 224 px / patch 16;
BERT 32 wide, 2 layers), so the numbers are the service's own cost (decode, preprocessing, batching,
transport) more than the model's. `--arch released`: the released architecture (ViT-L/16 + BERT-base,
~470M parameters) with random weights, written once to a temp dir (~1.8 GB).

In-process calls ImageRewardScorer.score() on the images (preprocessing + model); over HTTP the same
images go as one msgpack request of raw uint8 through the client to `python -m rewardflow_kit imagereward`
on 127.0.0.1. The two alternate repeat by repeat so machine noise hits both alike; times are medians.
Also shown: preprocessing alone (uint8 512 px -> normalised 224 px tensor) and the check that both
paths give the same scores.
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
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import torch
from rewardflow_imagereward.model import VIT_LARGE
from rewardflow_imagereward.scorer import ImageRewardScorer
from rewardflow_imagereward.tiny import released_med_config, write_tiny_checkpoint
from rewardflow_kit import Batch
from rewardflow_proto.client import RewardClient

PROMPTS = ["a photo of a cat", "a red cube on a blue sphere", "portrait of a woman at night", "a city at sunset"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(env: dict[str, str], log_path: Path, timeout_s: float = 600) -> tuple[subprocess.Popen, str]:
    """`python -m rewardflow_kit imagereward` on a free port, returned once /readyz is 200 (model loaded, warmed up)."""
    port = free_port()
    full_env = {**os.environ, **env, "REWARDFLOW_HOST": "127.0.0.1", "REWARDFLOW_PORT": str(port)}
    full_env["REWARDFLOW_LOG_LEVEL"] = "warning"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rewardflow_kit", "imagereward"], env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"service not ready within {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def photo_like(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: smooth colour fields plus grain, like generated images."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.uniform(0, 255, (n, 3, max(size // 32, 2), max(size // 32, 2)))).float()
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    grain = torch.from_numpy(rng.normal(0, 8, (n, 3, size, size))).float()
    return (smooth + grain).clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16, help="images per request (one batch)")
    parser.add_argument("--size", type=int, default=512, help="square image side in pixels")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--arch", choices=["tiny", "released"], default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto", help="REWARDFLOW_DTYPE: auto, float32, float16, bfloat16")
    args = parser.parse_args(argv)

    workdir = Path(tempfile.mkdtemp(prefix="imagereward-bench-"))
    start = time.perf_counter()
    if args.arch == "tiny":
        model_dir = write_tiny_checkpoint(workdir / "model", seed=0)
    else:
        model_dir = write_tiny_checkpoint(workdir / "model", seed=0, vision=VIT_LARGE, med_config=released_med_config())
    print(f"model: {args.arch} random weights in {model_dir} (written in {time.perf_counter() - start:.1f} s)")
    env = {"REWARDFLOW_MODEL": str(model_dir), "REWARDFLOW_DEVICE": args.device, "REWARDFLOW_DTYPE": args.dtype}
    os.environ.update(env)  # the in-process scorer reads the same settings

    scorer = ImageRewardScorer()
    scorer.model_id, scorer.device = str(model_dir), args.device
    scorer.load()
    images = photo_like(args.images, args.size)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    batch = Batch(images=list(images), prompts=prompts, metadata=[{}] * args.images, group_ids=[None] * args.images)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def in_process() -> list:
        out = scorer.score(batch)
        sync()
        return out

    def preprocess_only() -> None:
        scorer._preprocess(batch.images, device=scorer._torch_device, dtype=scorer._dtype)
        sync()

    proc, url = start_service(env, workdir / "service.log")
    try:

        async def run() -> tuple[list[float], list[float], list[float], float]:
            async with RewardClient({"imagereward": [url]}, {"imagereward": 1.0}, timeout_s=600) as client:
                expected = np.array([item.scores["score"] for item in in_process()])
                result = await client.score(images, prompts)
                worst = float(np.abs(result.components["imagereward"] - expected).max())
                for _ in range(2):  # warm-up of both paths
                    in_process()
                    await client.score(images, prompts)
                local, remote, pre = [], [], []
                for _ in range(args.repeats):
                    local.append(timed(in_process))
                    start = time.perf_counter()
                    await client.score(images, prompts)
                    remote.append(time.perf_counter() - start)
                    pre.append(timed(preprocess_only))
                return local, remote, pre, worst

        local, remote, pre, worst = asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(15)

    n = args.images
    t_local, t_remote, t_pre = (statistics.median(x) for x in (local, remote, pre))
    device = (
        torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"{n} images {args.size}x{args.size} in one request, {scorer._dtype} on {device}, median of {args.repeats}")
    print(f"  in-process ImageRewardScorer.score  {t_local * 1000:9.1f} ms  {n / t_local:8.1f} images/s")
    print(f"  HTTP + msgpack (client -> service)  {t_remote * 1000:9.1f} ms  {n / t_remote:8.1f} images/s")
    print(f"  preprocessing alone (in-process)    {t_pre * 1000:9.1f} ms  ({t_pre / t_local:.0%} of in-process)")
    print(f"  => HTTP / in-process time: {t_remote / t_local:.2f}x (+{(t_remote - t_local) * 1000:.1f} ms per request)")
    print(f"  scores over HTTP vs in-process: max |difference| {worst:.2e}")


if __name__ == "__main__":
    main()
