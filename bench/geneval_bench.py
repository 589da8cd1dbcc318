"""GenEval service throughput: images/s over HTTP vs in-process, side by side in one run.

    .venv/bin/python bench/geneval_bench.py [--images 16] [--size 512] [--repeats 5]
    .venv/bin/python bench/geneval_bench.py --arch swin-s --device cuda --dtype float16   # on a GPU

`--arch tiny` (default): the tiny random models of the tests (Mask2Former with a 16-wide 4-stage Swin,
20 queries; CLIP 32 wide, 2 layers), so the numbers are mostly the service's own cost (preprocessing,
post-processing at 512 px, crops, rules, transport). `--arch swin-s`: the architecture of
facebook/mask2former-swin-small-coco-instance (Swin-S, 100 queries) and of CLIP ViT-L/14, random
weights. In both, the detector's class head is biased so every query says "dog": every image then
has dogs to colour, so the CLIP pass runs on every image (the metadata asks for "a red dog").

In-process calls GenevalScorer.score() on the batch; over HTTP the same images go as one msgpack
request of raw uint8 through the client to `python -m rewardflow_kit geneval` on 127.0.0.1. The two
alternate repeat by repeat so machine noise hits both alike; times are medians.
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

import httpx
import numpy as np
import torch
from rewardflow_geneval.scorer import GenevalScorer
from rewardflow_geneval.tiny import swin_small_config, write_mask2former, write_tiny_mask2former
from rewardflow_kit import Batch
from rewardflow_proto.client import RewardClient
from rewardflow_vision.tiny import write_clip_image_processor, write_clip_tokenizer, write_tiny_clip

METADATA = {
    "tag": "colors",
    "include": [{"class": "dog", "count": 1, "color": "red"}],
    "prompt": "a photo of a red dog",
}


def write_vit_l14_clip(directory: Path, seed: int = 0) -> Path:
    """CLIP ViT-L/14 (OpenAI's architecture, 224 px) with random weights and the byte-level test tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    vocab = write_clip_tokenizer(directory)
    write_clip_image_processor(directory, 224, 224)
    text = {"vocab_size": len(vocab), "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "max_position_embeddings": 77, "bos_token_id": len(vocab) - 2,
            "eos_token_id": len(vocab) - 1, "pad_token_id": len(vocab) - 1}  # fmt: skip
    vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
              "image_size": 224, "patch_size": 14}  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768)).save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(env: dict[str, str], log_path: Path, timeout_s: float = 900) -> tuple[subprocess.Popen, str]:
    """`python -m rewardflow_kit geneval` on a free port, returned once /readyz is 200."""
    port = free_port()
    full_env = {**os.environ, **env, "REWARDFLOW_HOST": "127.0.0.1", "REWARDFLOW_PORT": str(port)}
    full_env["REWARDFLOW_LOG_LEVEL"] = "warning"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rewardflow_kit", "geneval"], env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError(f"service not ready after {timeout_s} s:\n{log_path.read_text()[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--arch", choices=("tiny", "swin-s"), default="tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in both paths (default: torch's)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="geneval-bench-"))
    if args.arch == "tiny":
        detector = write_tiny_mask2former(workdir / "detector", favour_class="dog")
        clip = write_tiny_clip(workdir / "clip")
    else:
        detector = write_mask2former(workdir / "detector", swin_small_config(), favour_class="dog")
        clip = write_vit_l14_clip(workdir / "clip")
    env = {"REWARDFLOW_MODEL": str(detector), "REWARDFLOW_CLIP_MODEL": str(clip), "REWARDFLOW_DEVICE": args.device,
           "REWARDFLOW_DTYPE": args.dtype, "HF_HUB_OFFLINE": "1"}  # fmt: skip
    if args.threads:
        torch.set_num_threads(args.threads)
        env["OMP_NUM_THREADS"] = str(args.threads)
    os.environ.update(env)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8)
    prompts = [METADATA["prompt"]] * args.images
    metadata = [METADATA] * args.images

    scorer = GenevalScorer()
    scorer.model_id, scorer.device = str(detector), args.device
    scorer.load()
    batch = Batch(images=list(images), prompts=prompts, metadata=metadata)
    scorer.score(batch)  # warm-up (text classifier for "dog", kernels)
    proc, url = start_service(env, workdir / "service.log")

    async def over_http(client: RewardClient) -> tuple[float, list[float]]:
        start = time.perf_counter()
        result = await client.score(images, prompts, metadata=metadata)
        return time.perf_counter() - start, list(result.scores["geneval"]["score"])

    async def run() -> None:
        local, remote, detect = [], [], []
        async with RewardClient({"geneval": [url]}, {"geneval": 1.0}, timeout_s=600) as client:
            await over_http(client)  # warm-up of the connection and the service's classifier cache
            for _ in range(args.repeats):
                start = time.perf_counter()
                local_scores = [r.scores["score"] for r in scorer.score(batch)]
                local.append(time.perf_counter() - start)
                elapsed, http_scores = await over_http(client)
                remote.append(elapsed)
                start = time.perf_counter()
                scorer.detector.detect(list(images), min_score=0.3)
                detect.append(time.perf_counter() - start)
        t_local, t_http, t_detect = (statistics.median(x) for x in (local, remote, detect))
        print(f"geneval bench: {args.images} images {args.size}x{args.size}, arch {args.arch}, device {args.device}, "
              f"dtype {args.dtype}, {torch.get_num_threads()} threads, {args.repeats} repeats (medians)")  # fmt: skip
        print(f"  in-process score()    {t_local * 1000:9.1f} ms  {args.images / t_local:8.2f} images/s")
        print(f"  over HTTP (client)    {t_http * 1000:9.1f} ms  {args.images / t_http:8.2f} images/s")
        print(f"  HTTP / in-process     {t_http / t_local:9.2f} x")
        print(f"  detector alone        {t_detect * 1000:9.1f} ms  ({t_detect / t_local:.0%} of in-process)")
        print(f"  same scores both ways: {np.allclose(local_scores, http_scores)}")

    try:
        asyncio.run(run())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
