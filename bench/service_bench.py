"""Foundation benchmarks, measured side by side in one run on this machine.

    .venv/bin/python bench/service_bench.py [--repeats 15]

(a) service tax: 16 RGB 512x512 images scored by the jpeg service over HTTP+msgpack vs the same
    scorer called in-process;
(b) transport alone: our raw-uint8 msgpack request through the kit vs per-image JPEG + pickle and
    base64 JPEG in JSON (both decoded back to arrays on the server), with a plain socket moving
    the same bytes as the floor;
(c) fan-out: three services of known latency called at once by the client vs one after another;
(d) micro-batching: 8 concurrent clients sending 1 image each vs 1 client sending 8.
Every service is a real uvicorn process on 127.0.0.1. Times are medians over `--repeats` runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import pickle  # the reference's transport, measured here as the alternative; never used by rewardflow
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rewardflow_jpeg.scorer import JpegScorer
from rewardflow_kit import Batch
from rewardflow_proto.client import RewardClient

BENCH_DIR = Path(__file__).resolve().parent
N_IMAGES, SIZE = 16, 512
UVICORN = ["-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real uvicorn process on a free port, stopped on exit."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, ready_path: str = "/readyz") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "PYTHONPATH": str(BENCH_DIR), "REWARDFLOW_PORT": str(self.port), **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, *[a.replace("{port}", str(self.port)) for a in args]],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + ready_path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.proc.kill()
        raise RuntimeError(f"{args} did not become ready on {self.url}")

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def kit_service(spec: str, **env: str) -> Server:
    return Server(["-m", "rewardflow_kit", spec], env=env)


def median_s(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_images(n: int = N_IMAGES, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Photo-like images, (n, size, size, 3) uint8: smooth shapes plus grain, ~50 kB each as JPEG q75."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), dtype=np.uint8)
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, size=(size // 16, size // 16, 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((size, size), Image.BICUBIC), dtype=np.float32)
        out[i] = np.clip(smooth + rng.normal(0.0, 8.0, smooth.shape), 0, 255).astype(np.uint8)
    return out


def row(name: str, seconds: float, note: str = "") -> None:
    print(f"  {name:<52} {seconds * 1000:9.1f} ms  {note}")


# ------------------------------------------------------------------ (a) service tax


def bench_service_tax(images: np.ndarray, prompts: list[str], repeats: int) -> float:
    print(f"(a) service tax: {N_IMAGES} RGB {SIZE}x{SIZE} images, jpeg reward")
    scorer = JpegScorer()
    scorer.load()
    batch = Batch(images=list(images), prompts=prompts, metadata=[{}] * len(prompts), group_ids=[None] * len(prompts))
    local = median_s(lambda: scorer.score(batch), repeats)
    with Server(["-m", "rewardflow_kit", "jpeg"]) as server:

        async def over_http() -> float:
            async with RewardClient({"jpeg": [server.url]}, {"jpeg_compressibility": 1.0}) as client:
                result = await client.score(images, prompts)
                expected = [s.scores["compressibility"] for s in scorer.score(batch)]
                assert np.allclose(result.components["jpeg_compressibility"], expected), "scores differ"
                return await amedian_async(lambda: client.score(images, prompts), repeats)

        remote = asyncio.run(over_http())
    row("in-process JpegScorer.score", local)
    row("HTTP + msgpack through the client and the kit", remote)
    print(f"  => service tax: {remote / local:.2f}x the in-process time (+{(remote - local) * 1000:.1f} ms)\n")
    return remote / local


# ------------------------------------------------------------------ (b) transport


def socket_floor_s(nbytes: int, repeats: int) -> float:
    """Loopback TCP: send `nbytes` and wait for a 1-byte ack, the floor for any HTTP transport."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        buf = bytearray(nbytes)
        view = memoryview(buf)
        with conn:
            while True:
                got = 0
                while got < nbytes:
                    n = conn.recv_into(view[got:])
                    if n == 0:
                        return
                    got += n
                conn.sendall(b"k")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    payload = bytes(nbytes)
    client = socket.create_connection(("127.0.0.1", port))

    def once() -> None:
        client.sendall(payload)
        client.recv(1)

    try:
        return median_s(once, repeats)
    finally:
        client.close()
        listener.close()


def bench_transport(images: np.ndarray, prompts: list[str], repeats: int) -> tuple[float, float]:
    from rewardflow_proto import ScoreRequest, decode_response
    from rewardflow_proto.codec import encode_request_parts

    print(f"(b) transport alone: {N_IMAGES} RGB {SIZE}x{SIZE} images to a server that decodes them to arrays")
    with (
        # Transport alone: a model that costs nothing and no micro-batching wait.
        kit_service(
            "scorers:FixedCostScorer", BENCH_BATCH_MS="0", BENCH_ITEM_MS="0", REWARDFLOW_MAX_QUEUE_DELAY_MS="0"
        ) as ours,
        Server(
            [*UVICORN, "--app-dir", str(BENCH_DIR), "transport_server:app", "--port", "{port}"],
            ready_path="/healthz",
        ) as alt,
    ):
        http = httpx.Client(timeout=60)

        def msgpack_raw() -> None:
            parts = encode_request_parts(ScoreRequest(images=images, prompts=prompts))  # what the client sends
            headers = {"content-type": "application/msgpack", "content-length": str(sum(len(p) for p in parts))}
            r = http.post(ours.url + "/v1/score", content=iter(parts), headers=headers)
            assert len(decode_response(r.content)) == len(prompts)

        def jpeg_pickle() -> None:
            blobs = []
            for image in images:
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="JPEG")
                blobs.append(buffer.getvalue())
            r = http.post(alt.url + "/pickle", content=pickle.dumps({"images": blobs, "prompts": prompts}))
            assert pickle.loads(r.content)["n"] == len(prompts)

        def jpeg_base64_json() -> None:
            encoded = []
            for image in images:
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="JPEG")
                encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
            r = http.post(alt.url + "/json", content=json.dumps({"images": encoded, "prompts": prompts}))
            assert r.json()["n"] == len(prompts)

        ours_s = median_s(msgpack_raw, repeats)
        pickle_s = median_s(jpeg_pickle, repeats)
        json_s = median_s(jpeg_base64_json, repeats)
        http.close()
    # Last: the in-process socket server's thread and buffers slowed the HTTP runs measured after it.
    floor = socket_floor_s(images.nbytes, repeats)
    row(f"plain socket, {images.nbytes / 1e6:.1f} MB + 1-byte ack (floor)", floor)
    row("ours: raw uint8 msgpack batch, through the kit", ours_s, f"{ours_s / floor:.1f}x the socket floor")
    row("per-image JPEG + pickle (reference style)", pickle_s)
    row("base64 JPEG in JSON", json_s)
    print(f"  => JPEG+pickle takes {pickle_s / ours_s:.2f}x ours; base64 JSON takes {json_s / ours_s:.2f}x ours\n")
    return pickle_s / ours_s, json_s / ours_s


# ------------------------------------------------------------------ (c) fan-out


def bench_fanout(repeats: int) -> float:
    latencies = {"alpha": 30, "beta": 60, "gamma": 90}
    print(f"(c) fan-out: three services with fixed latencies {list(latencies.values())} ms, 4 small images")
    images = make_images(4, 64)
    prompts = ["a cat"] * 4
    servers = [
        kit_service("scorers:FixedCostScorer", BENCH_NAME=name, BENCH_BATCH_MS=str(ms), BENCH_ITEM_MS="0")
        for name, ms in latencies.items()
    ]
    try:
        endpoints = {name: [s.url] for name, s in zip(latencies, servers, strict=True)}

        async def measure() -> tuple[float, float]:
            together = RewardClient(endpoints, {name: 1.0 for name in latencies})
            alone = [RewardClient({name: endpoints[name]}, {name: 1.0}) for name in latencies]
            async with together:
                for c in alone:
                    await c.__aenter__()

                async def sequential() -> None:
                    for c in alone:
                        await c.score(images, prompts)

                at_once = await amedian_async(lambda: together.score(images, prompts), repeats)
                one_by_one = await amedian_async(sequential, repeats)
                for c in alone:
                    await c.aclose()
            return at_once, one_by_one

        at_once, one_by_one = asyncio.run(measure())
    finally:
        for s in servers:
            s.__exit__()
    row("one client, all three at once", at_once, f"(slowest service alone: {max(latencies.values())} ms)")
    row("one after another", one_by_one, f"(sum of latencies: {sum(latencies.values())} ms)")
    print(f"  => fan-out is {one_by_one / at_once:.2f}x faster than calling one after another\n")
    return one_by_one / at_once


async def amedian_async(fn: Callable[[], Awaitable[object]], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        await fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ------------------------------------------------------------------ (d) micro-batching


def bench_microbatching(repeats: int) -> dict[str, float]:
    print("(d) micro-batching: 8 images, 1 client x 8 images vs 8 concurrent clients x 1 image")
    images = make_images(8, SIZE, seed=1)
    prompts = ["a cat"] * 8
    results = {}
    cases = {
        "jpeg (CPU-bound, no fixed cost per call)": ("jpeg", {}),
        "model costing 20 ms per call + 2 ms per image": (
            "scorers:FixedCostScorer",
            {"BENCH_BATCH_MS": "20", "BENCH_ITEM_MS": "2"},
        ),
    }
    for label, (target, env) in cases.items():
        with Server(["-m", "rewardflow_kit", target], env={"REWARDFLOW_MAX_QUEUE_DELAY_MS": "5", **env}) as server:

            async def measure() -> tuple[float, float, float]:
                endpoints = {"svc": [server.url]}
                clients = [RewardClient(endpoints, {"svc": 1.0}) for _ in range(8)]
                for c in clients:
                    await c.__aenter__()

                async def one_big() -> None:
                    await clients[0].score(images, prompts)

                async def eight_small() -> None:
                    singles = (c.score(images[i : i + 1], prompts[i : i + 1]) for i, c in enumerate(clients))
                    await asyncio.gather(*singles)

                async def eight_in_turn() -> None:
                    for i in range(8):
                        await clients[0].score(images[i : i + 1], prompts[i : i + 1])

                big = await amedian_async(one_big, repeats)
                small = await amedian_async(eight_small, repeats)
                in_turn = await amedian_async(eight_in_turn, repeats)
                for c in clients:
                    await c.aclose()
                return big, small, in_turn

            big, small, in_turn = asyncio.run(measure())
        print(f"  {label}")
        row("  1 client sending 8 images", big, f"{8 / big:7.1f} img/s")
        row("  8 concurrent clients sending 1 each (micro-batched)", small, f"{8 / small:7.1f} img/s")
        row("  1 client sending 8 single-image requests in turn", in_turn, f"{8 / in_turn:7.1f} img/s")
        print(
            f"  => throughput of 8 concurrent singles / 1x8 batch: {big / small:.2f}; vs singles in turn: "
            f"{in_turn / small:.2f}x"
        )
        results[label] = big / small
    print()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per measurement (median reported)")
    parser.add_argument("--only", choices=["a", "b", "c", "d"], action="append", help="run only these parts")
    parser.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    parts = sorted(set(args.only or "abcd"))
    if len(parts) > 1:
        # Each part in a fresh process: allocator and thread state left by one part slowed the next
        # (part (b) measured 16 ms alone and 28 ms after (a)).
        print(f"rewardflow foundation bench — {os.cpu_count()} CPUs, median of {args.repeats} runs\n", flush=True)
        for part in parts:
            command = [sys.executable, __file__, "--repeats", str(args.repeats), "--only", part, "--quiet"]
            subprocess.run(command, check=True)
        return
    if not args.quiet:
        print(f"rewardflow foundation bench — {os.cpu_count()} CPUs, median of {args.repeats} runs\n")
    part = parts[0]
    images = make_images()
    prompts = [f"a photo number {i}" for i in range(N_IMAGES)]
    if part == "a":
        bench_service_tax(images, prompts, args.repeats)
    elif part == "b":
        bench_transport(images, prompts, args.repeats)
    elif part == "c":
        bench_fanout(args.repeats)
    else:
        bench_microbatching(args.repeats)


if __name__ == "__main__":
    main()
