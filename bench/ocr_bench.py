"""OCR service throughput on CPU: images/s for 512x512 text renders, over HTTP vs in-process, side by side.

    .venv/bin/python bench/ocr_bench.py [--images 16] [--repeats 5] [--threads 1] [--backend rapidocr] [--model ID]

In-process calls OcrScorer.score() directly (the model work alone); over HTTP posts the same images
as one msgpack request (raw uint8) to `python -m rewardflow_kit ocr` on 127.0.0.1. The two are
interleaved repeat by repeat so machine noise hits both alike. Also shown: the same images scored
one per call, which is what batched recognition saves. The server idles while the in-process
scorer runs (and vice versa): both use every core through onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from rewardflow_kit import Batch
from rewardflow_ocr.scorer import OcrScorer
from rewardflow_ocr.settings import OcrSettings
from rewardflow_proto import MSGPACK, ScoreRequest, decode_response, encode_request

SIZE = 512
PHRASES = ["Grand Opening", "FRESH BREAD", "rewardflow", "Hello World", "Open 24 Hours", "SALE 50% OFF"]


def text_images(n: int, seed: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """n white 512x512 images, each with one or two lines of dark DejaVu text, and prompts quoting line one."""
    font_path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    rng = np.random.default_rng(seed)
    images, prompts = [], []
    for i in range(n):
        image = Image.new("RGB", (SIZE, SIZE), "white")
        draw = ImageDraw.Draw(image)
        font = ImageFont.truetype(str(font_path), int(rng.integers(36, 60)))
        lines = [PHRASES[i % len(PHRASES)]] + ([PHRASES[(i + 1) % len(PHRASES)]] if i % 2 else [])
        for j, line in enumerate(lines):
            draw.text((int(rng.integers(10, 80)), 120 + 160 * j), line, fill="black", font=font)
        images.append(np.asarray(image))
        prompts.append(f'a sign that says "{lines[0]}"')
    return images, prompts


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(settings: OcrSettings, model: str | None) -> tuple[subprocess.Popen, str]:
    """`python -m rewardflow_kit ocr` on a free port, once /readyz answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REWARDFLOW_")}
    env.update(REWARDFLOW_PORT=str(port), REWARDFLOW_LOG_LEVEL="warning")
    env.update(REWARDFLOW_OCR_THREADS=str(settings.threads), REWARDFLOW_OCR_BACKEND=settings.backend)
    if model:
        env["REWARDFLOW_MODEL"] = model
    proc = subprocess.Popen([sys.executable, "-m", "rewardflow_kit", "ocr"], env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"rewardflow_ocr exited with {proc.returncode}")
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("rewardflow_ocr did not become ready in 120 s")


def interleaved(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run, the runs alternating within every repeat (after one warm-up each)."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16, help="images per batch (one request)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of each run")
    parser.add_argument("--threads", type=int, default=1, help="REWARDFLOW_OCR_THREADS (0: every CPU)")
    parser.add_argument("--backend", choices=["rapidocr", "paddleocr"], default="rapidocr", help="OCR engine")
    parser.add_argument("--model", default=None, help="REWARDFLOW_MODEL for the engine (default: its own)")
    args = parser.parse_args(argv)

    images, prompts = text_images(args.images)
    batch = Batch(images=images, prompts=prompts, metadata=[{}] * len(images), group_ids=[None] * len(images))
    settings = OcrSettings(threads=args.threads, backend=args.backend)
    scorer = OcrScorer(settings)
    if args.model:
        scorer.model_id = args.model
    scorer.load()
    scorer.score(scorer.warmup_batch())
    body = encode_request(ScoreRequest(images=np.stack(images), prompts=prompts), MSGPACK)

    proc, url = start_service(settings, args.model)
    try:
        with httpx.Client(timeout=600) as client:

            def over_http() -> list[float | None]:
                reply = client.post(url + "/v1/score", content=body, headers={"content-type": MSGPACK})
                reply.raise_for_status()
                return decode_response(reply.content, MSGPACK).scores["accuracy"]

            def in_process() -> list:
                return scorer.score(batch)

            def one_per_call() -> list:
                return [scorer.score(Batch([im], [p], [{}], [None]))[0] for im, p in zip(images, prompts, strict=True)]

            http_scores = over_http()
            local_scores = [item.scores["accuracy"] for item in in_process()]
            assert http_scores == local_scores, (http_scores, local_scores)
            medians = interleaved(
                {"in-process, one batch": in_process, "in-process, one image per call": one_per_call,
                 "over HTTP, one request": over_http},
                args.repeats,
            )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)

    n = len(images)
    print(f"OCR service ({args.backend}, {scorer.model_id}, CPU, {os.cpu_count()} cores), {n} images of {SIZE}x{SIZE}, "
          f"median of {args.repeats}; mean accuracy {np.mean(local_scores):.3f}")  # fmt: skip
    for name, seconds in medians.items():
        print(f"  {name:<34} {seconds * 1000:9.1f} ms  {n / seconds:6.2f} images/s")
    base = medians["in-process, one batch"]
    print(f"  HTTP / in-process time ratio: {medians['over HTTP, one request'] / base:.3f}")
    print(f"  one-per-call / batched time ratio: {medians['in-process, one image per call'] / base:.3f}")


if __name__ == "__main__":
    main()
