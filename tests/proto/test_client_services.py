"""The client against real jpeg services: real uvicorn processes on 127.0.0.1, real HTTP."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from rewardflow_kit.stack import Stack, start_stack
from rewardflow_proto import EncodedImage
from rewardflow_proto.client import RetryPolicy, RewardClient, RewardServiceError, SyncRewardClient

pytestmark = pytest.mark.slow


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
                start = time.monotonic()
                with pytest.raises(RewardServiceError) as info:
                    await client.score(batch, "p")
                assert time.monotonic() - start < 5
                message = str(info.value)
                assert "jpeg_size_kb" in message and urls[0] in message and urls[1] in message
                return totals

        totals = asyncio.run(run())
    finally:
        stack.stop(grace_s=1.0)
    assert len(totals) == 30
    for total in totals:
        np.testing.assert_allclose(total, expected)
