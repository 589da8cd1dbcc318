"""The client against real jpeg services: real uvicorn processes on 127.0.0.1, real HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from rewardflow_kit.stack import Stack, start_stack
from rewardflow_proto import EncodedImage
from rewardflow_proto.client import RetryPolicy, RewardClient, RewardServiceError, SyncRewardClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "faults"))
from fault_env import scorer_env

pytestmark = pytest.mark.slow
READY_S = 300.0  # a hang guard for a service coming up on a busy 2-core machine, not a speed


def size_kb(image: np.ndarray) -> float:
    """The jpeg score computed here, independently of the service: quality-95 JPEG bytes / 1000."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return len(buffer.getvalue()) / 1000


def images(n: int, seed: int = 0, size: int = 32) -> np.ndarray:
    """N images from flat to noisy, so their JPEG sizes differ."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    amount = np.linspace(0.0, 1.0, n)[:, None, None, None]
    return (128 * (1 - amount) + noise * amount).astype(np.uint8)


def gauge(url: str, name: str) -> float:
    """The value of one of the kit's gauges (e.g. rewardflow_in_flight_requests) from /metrics."""
    found = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", httpx.get(f"{url}/metrics").text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def until(condition: Callable[[], bool], deadline_s: float = 60.0) -> bool:
    """Poll `condition` (in a thread) until it holds; False if it never did within `deadline_s` (a hang guard:
    the tests below wait for events the services cannot reach by chance, so the deadline is not a speed)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if await asyncio.to_thread(condition):
            return True
        await asyncio.sleep(0.02)
    return False


def held(path: Path) -> dict[str, str]:
    """Env of a service whose score requests wait until `path` exists (the kit's fault file, `hold_file`)."""
    faults = path.with_suffix(".faults.json")
    faults.write_text(json.dumps({"hold_file": str(path), "hold_max_s": 120}))
    return {"REWARDFLOW_FAULT_FILE": str(faults)}


def requests_by_code(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    return {m[0]: float(m[1]) for m in re.findall(r'rewardflow_requests_total\{[^}]*code="(\d+)"[^}]*\} (\S+)', text)}


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def jpeg_pair(tmp_module: Path) -> Iterator[list[str]]:
    """Two jpeg processes (used as two services, or as two replicas of one)."""
    with start_stack(["jpeg"], replicas=2, log_dir=tmp_module / "pair") as stack:
        yield stack.endpoints["jpeg"]


@pytest.fixture(scope="module")
def jpeg_small_batches(tmp_module: Path) -> Iterator[str]:
    """A jpeg process that takes at most 4 images per request."""
    with start_stack(["jpeg"], log_dir=tmp_module / "small", env={"REWARDFLOW_MAX_BATCH_SIZE": "4"}) as stack:
        yield stack.endpoints["jpeg"][0]


def test_components_and_weighted_total_match_independent_scores(jpeg_pair: list[str]) -> None:
    batch = images(6)
    weights = {"jpeg": 0.5, "twin_size_kb": -0.01, "jpeg_incompressibility": 2.0}

    async def run() -> object:
        async with RewardClient({"jpeg": [jpeg_pair[0]], "twin": [jpeg_pair[1]]}, weights) as client:
            return await client.score(batch, [f"prompt {i}" for i in range(6)])

    result = asyncio.run(run())
    kb = np.array([size_kb(im) for im in batch])
    assert len(set(kb)) == 6  # the images really differ, so a mix-up of items would show
    np.testing.assert_allclose(result.components["jpeg"], -kb / 500)
    np.testing.assert_allclose(result.components["twin_size_kb"], kb)
    np.testing.assert_allclose(result.components["jpeg_incompressibility"], kb / 500)
    np.testing.assert_allclose(result.total, 0.5 * (-kb / 500) - 0.01 * kb + 2.0 * kb / 500)
    assert set(result.scores) == {"jpeg", "twin"}
    np.testing.assert_allclose(result.scores["twin"]["compressibility"], -kb / 500)
    assert result.errors == [None] * 6


def test_list_of_images_of_different_sizes_and_encoded_files(jpeg_pair: list[str]) -> None:
    a, b = images(2, seed=1, size=24)[1], images(2, seed=2, size=40)[1]
    png = io.BytesIO()
    Image.fromarray(b).save(png, format="PNG")
    batch = [a, b, EncodedImage("png", png.getvalue())]
    with SyncRewardClient({"jpeg": jpeg_pair}, {"jpeg_size_kb": 1.0}) as client:
        result = client.score(batch, "p")
    np.testing.assert_allclose(result.total, [size_kb(a), size_kb(b), size_kb(b)])


def test_a_bad_item_fails_alone_and_makes_its_total_nan(jpeg_pair: list[str]) -> None:
    good = images(3, seed=3)
    batch = [good[0], EncodedImage("png", b"not a png at all"), good[2]]
    with SyncRewardClient({"jpeg": jpeg_pair}, {"jpeg_size_kb": 1.0}) as client:
        result = client.score(batch, "p")
    assert result.errors[0] is None and result.errors[2] is None
    assert result.errors[1] is not None and result.errors[1]["jpeg"].code == "bad_image"
    assert np.isnan(result.total[1])
    np.testing.assert_allclose(result.total[[0, 2]], [size_kb(good[0]), size_kb(good[2])])


def test_batches_larger_than_the_service_limit_are_chunked(jpeg_small_batches: str) -> None:
    before = requests_by_code(jpeg_small_batches).get("200", 0.0)
    batch = images(10, seed=4)
    with SyncRewardClient({"jpeg": [jpeg_small_batches]}, {"jpeg_size_kb": 1.0}) as client:
        assert client.info("jpeg")["max_batch_size"] == 4
        result = client.score(batch, "p")
    np.testing.assert_allclose(result.total, [size_kb(im) for im in batch])
    assert requests_by_code(jpeg_small_batches)["200"] - before == 3  # 4 + 4 + 2


def test_client_error_is_not_retried_and_carries_the_server_message(jpeg_small_batches: str) -> None:
    before = requests_by_code(jpeg_small_batches).get("422", 0.0)
    with SyncRewardClient({"jpeg": [jpeg_small_batches]}) as client:
        with pytest.raises(RewardServiceError) as info:
            client.score(images(2), "p", metadata=[{"x": float("nan")}, None])
    assert info.value.status == 422
    assert "metadata[0].x" in str(info.value) and jpeg_small_batches in str(info.value)
    assert requests_by_code(jpeg_small_batches)["422"] - before == 1


def test_failover_when_a_replica_is_killed_mid_run_then_clear_error_when_all_are_gone(tmp_path: Path) -> None:
    stack: Stack = start_stack(["jpeg"], replicas=2, log_dir=tmp_path)
    urls, pids = stack.endpoints["jpeg"], stack.services["jpeg"]["pids"]
    batch = images(8, seed=5)
    expected = np.array([size_kb(im) for im in batch])
    try:

        async def run() -> list[np.ndarray]:
            fast = RetryPolicy(max_retries=4, base_s=0.02, cap_s=0.2)
            async with RewardClient({"jpeg": urls}, {"jpeg_size_kb": 1.0}, retry=fast, timeout_s=10) as client:
                totals: list[np.ndarray] = []

                async def worker() -> None:
                    for _ in range(10):
                        totals.append((await client.score(batch, "p")).total)
                        if len(totals) == 8:  # the other workers have calls in flight right now
                            assert requests_by_code(urls[0]).get("200", 0) > 0  # it was in the rotation
                            os.kill(pids[0], signal.SIGKILL)

                await asyncio.gather(*(worker() for _ in range(3)))
                os.kill(pids[1], signal.SIGKILL)
                with pytest.raises(RewardServiceError) as info:
                    await client.score(batch, "p")
                message = str(info.value)
                assert "jpeg_size_kb" in message and urls[0] in message and urls[1] in message
                # Refused connections, not timeouts: the error comes from the dead ports, not from waiting.
                assert "ConnectError" in message and "gave up after 5 attempts" in message
                assert "for images 0..7" in message
                return totals

        totals = asyncio.run(run())
    finally:
        stack.stop(grace_s=1.0)
    assert len(totals) == 30
    for total in totals:
        np.testing.assert_allclose(total, expected)


class SequentialClient(RewardClient):
    """A client that sends one request at a time: what the overlap tests below must catch (the variant that
    shows they can fail)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._one_at_a_time = asyncio.Lock()

    async def _call(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        async with self._one_at_a_time:
            return await super()._call(*args, **kwargs)  # type: ignore[arg-type]


async def overlap_seen(
    client_type: type[RewardClient], endpoints: dict[str, list[str]], batch: np.ndarray, gate: Path, wanted: dict
) -> tuple[bool, np.ndarray]:
    """Score `batch` while every service holds its requests; whether each URL had `wanted[url]` requests in flight
    at once before the gate opened, and the totals. The gate opens once that is seen, or after 60 s for our client
    (a hang guard); a SequentialClient never gets there, so 5 s of not seeing it are enough to show it."""
    patience_s = 5.0 if client_type is SequentialClient else 60.0
    async with client_type(endpoints, retry=RetryPolicy(max_retries=0), timeout_s=120) as client:
        await client.resolve()
        task = asyncio.create_task(client.score(batch, "p"))
        in_flight = lambda: all(gauge(u, "rewardflow_in_flight_requests") == n for u, n in wanted.items())  # noqa: E731
        seen = await until(in_flight, patience_s)
        gate.touch()
        total = (await task).total
    return seen, total


def test_every_service_is_called_at_the_same_time(service_process: Callable, tmp_path: Path) -> None:
    # Each service holds its request until the gate opens: a client that waits for one service's answer before
    # calling the next never has all three in flight, so the gate would never open on its account.
    env = held(tmp_path / "gate")
    urls = [service_process("scorers:ProbeScorer", env=env, timeout_s=READY_S).url for _ in range(3)]
    endpoints = {name: [u] for name, u in zip(("a", "b", "c"), urls, strict=True)}
    batch = np.full((3, 8, 8, 3), 255, np.uint8)
    seen, total = asyncio.run(overlap_seen(RewardClient, endpoints, batch, tmp_path / "gate", dict.fromkeys(urls, 1)))
    assert seen, "the three services never had a request in flight at the same time"
    np.testing.assert_allclose(total, [3.0] * 3)  # brightness 1 from each of a, b and c


@pytest.mark.parametrize("client_type", [RewardClient, SequentialClient])
def test_chunks_are_sent_concurrently_and_spread_over_replicas(
    service_process: Callable, tmp_path: Path, client_type: type[RewardClient]
) -> None:
    # 8 images, at most 2 per request: 4 chunks, 2 to each replica, all held until both replicas have 2 in
    # flight. A client that sends one replica's chunks one after another has at most 1 in flight per replica
    # (the held first one), so `seen` stays False: the SequentialClient variant shows the check catches it.
    env = {**held(tmp_path / "gate"), "REWARDFLOW_MAX_BATCH_SIZE": "2"}
    urls = [service_process("scorers:ProbeScorer", env=env, timeout_s=READY_S).url for _ in range(2)]
    batch = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 51, 102, 153, 204, 255, 0, 51)])
    seen, total = asyncio.run(
        overlap_seen(client_type, {"probe": urls}, batch, tmp_path / "gate", dict.fromkeys(urls, 2))
    )
    assert seen == (client_type is RewardClient)
    np.testing.assert_allclose(total, batch.reshape(8, -1).mean(axis=1) / 255)  # each chunk's items in place
    assert [requests_by_code(u)["200"] for u in urls] == [2, 2]  # round robin


def test_a_stalled_service_trips_the_timeout_then_the_error_says_so(service_process: Callable, tmp_path: Path) -> None:
    service = service_process("scorers:ProbeScorer", env=held(tmp_path / "never"), timeout_s=READY_S)

    async def run() -> None:
        async with RewardClient({"probe": [service.url]}, timeout_s=0.5, retry=RetryPolicy(1, 0.01, 0.02)) as client:
            await client.resolve()
            await client.score(np.zeros((2, 4, 4, 3), np.uint8), "p")

    with pytest.raises(RewardServiceError, match=r"for images 0..1: gave up after 2 attempts.*ReadTimeout"):
        asyncio.run(run())
    assert asyncio.run(until(lambda: gauge(service.url, "rewardflow_in_flight_requests") == 2))  # both held


def test_a_paused_replica_trips_the_timeout_and_the_other_serves(tmp_path: Path) -> None:
    stack = start_stack(["jpeg"], replicas=2, log_dir=tmp_path)
    urls, pids = stack.endpoints["jpeg"], stack.services["jpeg"]["pids"]
    batch = images(4, seed=6)
    try:
        with SyncRewardClient({"jpeg": urls}, {"jpeg_size_kb": 1.0}, timeout_s=10.0) as client:
            client.info("jpeg")
            os.kill(pids[0], signal.SIGSTOP)  # accepts connections (the kernel does), never answers
            totals = [client.score(batch, "p").total for _ in range(4)]
        served = requests_by_code(urls[1]).get("200", 0)
    finally:
        os.kill(pids[0], signal.SIGCONT)
        stack.stop(grace_s=1.0)
    for total in totals:
        np.testing.assert_allclose(total, [size_kb(im) for im in batch])
    assert served == 4  # every batch from the replica that was not paused


def test_a_full_queue_answers_429_and_the_client_retries_until_served(
    service_process: Callable, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    env = scorer_env(
        TEST_GATE_FILE=str(gate),
        REWARDFLOW_MAX_BATCH_SIZE="1",
        REWARDFLOW_MAX_QUEUE_SIZE="1",
        REWARDFLOW_MAX_QUEUE_DELAY_MS="0",
    )
    url = service_process("fault_scorers:GateScorer", env=env, timeout_s=READY_S).url
    one = np.full((1, 4, 4, 3), 255, np.uint8)

    def blocker() -> None:
        with SyncRewardClient({"gate": [url]}) as other:
            other.score(one, "p")

    threads = [threading.Thread(target=blocker) for _ in range(2)]
    threads[0].start()  # scored (held by the gate) ...
    assert asyncio.run(
        until(lambda: gauge(url, "rewardflow_in_flight_requests") == 1 and gauge(url, "rewardflow_queue_depth") == 0)
    )
    threads[1].start()  # ... then queued: the queue (1 image) is full until the gate opens
    assert asyncio.run(until(lambda: gauge(url, "rewardflow_queue_depth") == 1))

    async def run() -> np.ndarray:
        async with RewardClient({"gate": [url]}, retry=RetryPolicy(max_retries=30)) as client:
            task = asyncio.create_task(client.score(one, "p"))
            assert await until(lambda: requests_by_code(url).get("429", 0) >= 1)
            gate.touch()
            return (await task).total

    np.testing.assert_allclose(asyncio.run(run()), [1.0])
    for thread in threads:
        thread.join(60)
    assert requests_by_code(url)["200"] == 3


def test_a_loading_service_answers_503_and_the_client_retries_until_ready(
    service_process: Callable, tmp_path: Path
) -> None:
    gate = tmp_path / "loaded"
    service = service_process(
        "fault_scorers:GateLoadScorer", env=scorer_env(TEST_LOAD_GATE=str(gate)), wait="/healthz", timeout_s=READY_S
    )

    async def run() -> np.ndarray:
        async with RewardClient({"probe": [service.url]}, retry=RetryPolicy(max_retries=30)) as client:
            task = asyncio.create_task(client.score(np.full((2, 4, 4, 3), 255, np.uint8), "p"))
            assert await until(lambda: requests_by_code(service.url).get("503", 0) >= 1)
            gate.touch()
            return (await task).total

    np.testing.assert_allclose(asyncio.run(run()), [1.0, 1.0])
    assert requests_by_code(service.url)["200"] == 1
