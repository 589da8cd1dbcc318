"""Decoded pixels are budgeted (issue 17): per image, per request and per model call, checked from the encoded
files' headers before anything is decoded; a scorer's working resolution lets the kit decode smaller."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

import httpx
import numpy as np
import pytest
from PIL import Image
from raw_http import PeakRss, rss_mb
from rewardflow_kit.images import decode_image, pixel_chunks
from rewardflow_proto import EncodedImage, ScoreRequest, decode_response, encode_request
from service_calls import MSGPACK, encoded, error_of, post, random_images

pytestmark = pytest.mark.slow

RSS_BOUND_MB = 300  # the 2 MB bomb below may grow the service by this much (the old code went past 6 GB)


def grey_png(side: int) -> EncodedImage:
    """A black grayscale PNG of side x side pixels: 16 KB on the wire for 4096 px, 48 MiB once decoded to RGB."""
    buffer = io.BytesIO()
    Image.new("L", (side, side)).save(buffer, format="PNG")
    return EncodedImage(format="png", data=buffer.getvalue())


def test_request_of_128_huge_grayscale_pngs_is_refused_before_decoding(service_process: Callable) -> None:
    service = service_process("jpeg")
    bomb = grey_png(4096)
    body = encode_request(ScoreRequest(images=[bomb] * 128, prompts=["p"] * 128))
    assert len(body) < 4_000_000
    idle = rss_mb(service.process.pid)
    # The safety net kills the service far below the old code's 6.3 GB; the assertions below then fail.
    with PeakRss(service.process.pid, kill_above_mb=idle + 1500, kill=service.process.kill).running() as peak:
        try:
            reply: httpx.Response | None = post(service.url, body)
        except httpx.TransportError:
            reply = None
    assert not peak.killed and reply is not None, f"the service passed {idle + 1500:.0f} MiB and was killed"
    assert peak.peak_mb - idle < RSS_BOUND_MB, f"the request grew the service by {peak.peak_mb - idle:.0f} MiB"
    assert reply.status_code == 413, reply.content[:300]
    error = error_of(reply)
    assert error["code"] == "too_large" and "max_request_pixels" in error["message"], error
    assert "67108864" in error["message"] and "2147483648" in error["message"], error
    info = httpx.get(service.url + "/v1/info").json()
    assert (info["max_image_pixels"], info["max_request_pixels"], info["max_batch_pixels"]) == (4096**2, 2**26, 2**26)
    small = [encoded(image, "png") for image in random_images(2, 64, 64)]
    assert post(service.url, encode_request(ScoreRequest(images=small, prompts=["a", "b"]))).status_code == 200


def test_an_encoded_image_over_max_image_pixels_is_413_naming_it(service_process: Callable) -> None:
    service = service_process("scorers:ProbeScorer", env={"REWARDFLOW_MAX_IMAGE_PIXELS": "4096"})
    images = [encoded(random_images(1, 64, 64)[0], "png"), encoded(random_images(1, 65, 64)[0], "jpeg")]
    reply = post(service.url, encode_request(ScoreRequest(images=images, prompts=["fits", "too big"])))
    assert reply.status_code == 413, reply.content[:300]
    error = error_of(reply)
    assert error["field"] == "images[1]" and "65x64" in error["message"] and "4096" in error["message"], error


async def post_all(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=len(bodies))) as client:
        return await asyncio.gather(
            *(client.post(url + "/v1/score", content=b, headers={"content-type": MSGPACK}) for b in bodies)
        )


def test_merged_requests_are_scored_in_calls_within_max_batch_pixels(service_process: Callable) -> None:
    service = service_process(
        "scorers:ProbeScorer",
        env={
            "REWARDFLOW_MAX_REQUEST_PIXELS": "2048",
            "REWARDFLOW_MAX_BATCH_PIXELS": "4096",
            "REWARDFLOW_MAX_QUEUE_DELAY_MS": "500",
        },
    )
    bodies = [
        encode_request(ScoreRequest(images=random_images(2, 32, 32, seed=i), prompts=["p"] * 2)) for i in range(4)
    ]
    replies = asyncio.run(post_all(service.url, bodies))
    assert [r.status_code for r in replies] == [200] * 4
    sizes = [d["batch_size"] for r in replies for d in decode_response(r.content).details]  # type: ignore[union-attr]
    assert max(sizes) == 4, f"model calls of {sizes}: two 2048-pixel requests fit one 4096-pixel call, no more"
    three = encode_request(ScoreRequest(images=random_images(3, 32, 32), prompts=["p"] * 3))
    reply = post(service.url, three)
    assert reply.status_code == 413 and "3072" in error_of(reply)["message"], reply.content[:300]


def test_a_scorer_working_size_lets_the_kit_decode_smaller(service_process: Callable) -> None:
    service = service_process("limit_scorers:WorkingSizeScorer")
    grey = np.full((768, 1024, 3), 200, np.uint8)
    raw = np.full((100, 80, 3), 200, np.uint8)
    request = ScoreRequest(images=[encoded(grey, "jpeg"), encoded(grey, "png"), raw], prompts=["j", "p", "r"])
    response = decode_response(post(service.url, encode_request(request)).content)
    shapes = [d["shape"] for d in response.details]  # type: ignore[union-attr]
    for height, width, _ in shapes[:2]:
        assert 64 <= min(height, width) < 128 and abs(width / height - 4 / 3) < 0.05, shapes
    assert shapes[2] == [100, 80, 3], "raw images arrive as sent"
    assert response.scores["brightness"] == pytest.approx([200 / 255] * 3, abs=2 / 255)


def test_pixel_chunks_keep_requests_whole_and_within_the_budget() -> None:
    assert pixel_chunks([2048, 2048, 2048, 1, 4096], 4096) == [(0, 2), (2, 4), (4, 5)]
    assert pixel_chunks([5000, 10], 4096) == [(0, 1), (1, 2)], "a request over the budget goes alone"
    assert pixel_chunks([], 4096) == []


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
@pytest.mark.parametrize(("height", "width"), [(768, 1024), (1001, 333), (130, 129), (64, 900), (40, 50)])
def test_decoding_for_a_working_size_keeps_the_shorter_side_at_least_that(fmt: str, height: int, width: int) -> None:
    image = encoded(np.full((height, width, 3), 90, np.uint8), fmt)
    decoded = decode_image(image, max_pixels=10**7, working_size=64)
    shorter = min(decoded.shape[:2])
    assert min(64, height, width) <= shorter < max(128, min(height, width) + 1), decoded.shape
    assert abs(decoded.shape[1] / decoded.shape[0] - width / height) < 0.05 * width / height + 0.02
    assert abs(float(decoded.mean()) - 90) < 3
