"""The GenEval service as a real process over HTTP, with tiny random Mask2Former and CLIP models built here.

The tiny detector's class head is biased towards "dog": every query says dog with probability ~1 and
a random mask, so confidences land near 0.5 (above GenEval's 0.3, below the 0.9 of counting).
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from rewardflow_geneval.tiny import write_tiny_mask2former
from rewardflow_proto import EncodedImage, ScoreRequest, encode_request
from rewardflow_vision.tiny import write_tiny_clip
from service_calls import MSGPACK, error_of, post, random_images, score

pytestmark = pytest.mark.slow

HUB_ID = "rewardflow-test/tiny-mask2former-coco"
SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"

DOG = {"tag": "single_object", "include": [{"class": "dog", "count": 1}]}
CAT = {"tag": "single_object", "include": [{"class": "cat", "count": 1}]}
TWO_DOGS = {"tag": "counting", "include": [{"class": "dog", "count": 2}], "exclude": [{"class": "dog", "count": 3}]}
RED_DOG = {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}]}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny detector (local dir and a Hugging Face cache snapshot of it) and a tiny CLIP."""
    root = tmp_path_factory.mktemp("geneval-models")
    detector = write_tiny_mask2former(root / "detector", seed=0, shortest_edge=64, favour_class="dog")
    clip = write_tiny_clip(root / "clip", seed=0)
    cache = root / "hub"
    repo = cache / ("models--" + HUB_ID.replace("/", "--"))
    shutil.copytree(detector, repo / "snapshots" / SNAPSHOT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SNAPSHOT)
    return {"detector": detector, "clip": clip, "cache": cache}


def service_env(models: dict[str, Path], **extra: str) -> dict[str, str]:
    return {
        "REWARDFLOW_MODEL": str(models["detector"]),
        "REWARDFLOW_CLIP_MODEL": str(models["clip"]),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(models["cache"]),
        **extra,
    }


@pytest.fixture(scope="module")
def geneval(module_service_process, tiny_models):
    return module_service_process(
        "geneval", env=service_env(tiny_models, REWARDFLOW_MAX_QUEUE_DELAY_MS="300"), timeout_s=180
    )


def request(metadata: list, n: int | None = None, seed: int = 0) -> ScoreRequest:
    n = n or len(metadata)
    images = random_images(n, 96, 96, seed=seed)
    return ScoreRequest(images=images, prompts=[f"prompt {i}" for i in range(n)], metadata=metadata)


def test_info_names_the_service_its_scores_and_the_local_model(geneval, tiny_models) -> None:
    info = httpx.get(geneval.url + "/v1/info").json()
    assert info["name"] == "geneval"
    assert info["score_keys"] == ["score", "strict"]
    assert info["model"] == str(tiny_models["detector"])
    assert info["score_range"]["strict"] == [0.0, 1.0]
    assert info["score_range"]["score"] == [-14.0, 1.0]  # Flow-GRPO's dense score: "a dog" with 16 dogs kept


def test_verdicts_follow_the_rules_on_what_the_detector_saw(geneval) -> None:
    reply = score(geneval.url, request([DOG, CAT, TWO_DOGS, RED_DOG]))
    assert reply.errors == [None] * 4
    dog, cat, two_dogs, red_dog = reply.details
    dogs = dog["detected"]["dog"]
    assert dogs >= 1 and dog["strict"] is True
    assert reply.scores["strict"][:2] == [1.0, 0.0]
    # the dense score counts every kept dog: 1 - |1 - N| / 1, so N dogs for "a dog" give 2 - N
    assert reply.scores["score"][:2] == [1.0 - abs(1 - dogs), 0.0]
    assert dog["credits"] == [1.0 - abs(1 - dogs)]
    assert cat["failed"] == ["expected at least 1 cat, found 0"]
    # counting: 0.9 threshold, the tiny dogs are ~0.5 -> none counted: count credit 0, the exclude clause earns nothing
    assert two_dogs["detected"] == {}
    assert reply.scores["score"][2] == 0.0 and reply.scores["strict"][2] == 0.0
    # colours: CLIP ran on the top dog's masked crop; the verdict agrees with the colour it named
    colour = red_dog["objects"][0]["color"]
    assert reply.scores["strict"][3] == (1.0 if colour == "red" else 0.0)
    if red_dog["detected"]["dog"] != 1:  # the wrong count adds one 0.0 for the colour clause
        assert red_dog["credits"] == [1.0 - abs(1 - red_dog["detected"]["dog"]), 0.0]
    assert all(0 <= o["score"] <= 1 and len(o["box"]) == 4 for o in dog["objects"])


def test_a_bad_image_fails_alone(geneval) -> None:
    images = list(random_images(3, 96, 96))
    images[1] = EncodedImage(format="png", data=b"not a png")
    reply = score(geneval.url, ScoreRequest(images=images, prompts=["a", "b", "c"], metadata=[DOG, DOG, CAT]))
    assert reply.errors[0] is None and reply.errors[2] is None
    assert reply.errors[1].code == "bad_image"
    assert reply.scores["strict"] == [1.0, None, 0.0]


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        (
            [DOG, {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "teal"}]}],
            "metadata[1].include[0].color",
        ),
        ([DOG, {"include": [{"class": "dog", "count": 1}]}], "metadata[1].tag"),
        (
            [DOG, {"tag": "single_object", "include": [{"class": "unicorn", "count": 1}]}],
            "metadata[1].include[0].class",
        ),
        ([DOG, None], "metadata[1]"),
    ],
)
def test_bad_metadata_is_422_naming_the_image_and_field(geneval, metadata, field) -> None:
    response = post(geneval.url, encode_request(request(metadata), MSGPACK))
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == field
    assert "image 1" in error["message"]


def test_no_metadata_at_all_is_422(geneval) -> None:
    response = post(
        geneval.url, encode_request(ScoreRequest(images=random_images(1, 96, 96), prompts=["a dog"]), MSGPACK)
    )
    assert response.status_code == 422
    assert error_of(response)["field"] == "metadata[0]"


def batch_histogram(url: str) -> tuple[float, float]:
    """(model calls, images) so far, from the kit's rewardflow_batch_size histogram."""
    values = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        for suffix in ("_count", "_sum"):
            if line.startswith(f"rewardflow_batch_size{suffix}{{"):
                values[suffix] = float(line.split()[-1])
    return values["_count"], values["_sum"]


def test_concurrent_requests_are_batched_and_score_as_alone(geneval, service_process, tiny_models) -> None:
    requests = [request([DOG, CAT, RED_DOG], seed=s) for s in range(4)]
    alone = [score(geneval.url, r) for r in requests]
    # A batch of 12 waits up to 10 minutes to fill, so the 4 requests meet in one model call however slowly
    # they arrive (an order, not a race against the usual 300 ms delay).
    env = service_env(tiny_models, REWARDFLOW_MAX_QUEUE_DELAY_MS="600000", REWARDFLOW_MAX_BATCH_SIZE="12")
    merging = service_process("geneval", env=env, timeout_s=180)
    calls_before, images_before = batch_histogram(merging.url)
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda r: score(merging.url, r), requests))
    calls_after, images_after = batch_histogram(merging.url)
    for a, b in zip(alone, together, strict=True):
        assert a.scores == b.scores
        assert a.details == b.details
    assert (calls_after - calls_before, images_after - images_before) == (1, 12)


def test_loads_a_hub_id_from_the_cache_offline(service_process, tiny_models) -> None:
    service = service_process("geneval", env=service_env(tiny_models, REWARDFLOW_MODEL=HUB_ID), timeout_s=180)
    assert httpx.get(service.url + "/v1/info").json()["model"] == HUB_ID
    assert score(service.url, request([DOG])).scores["strict"] == [1.0]


def test_an_uncached_hub_id_offline_is_not_ready_and_says_why(service_process, tiny_models) -> None:
    env = service_env(
        tiny_models,
        REWARDFLOW_MODEL="facebook/mask2former-swin-small-coco-instance",
        REWARDFLOW_STAY_UP_ON_LOAD_ERROR="1",
    )
    service = service_process("geneval", env=env, wait="/healthz", timeout_s=60)
    body = ""
    for _ in range(600):
        response = httpx.get(service.url + "/readyz")
        body = response.text
        if "offline" in body.lower() or "cannot load" in body.lower():
            break
        assert response.status_code == 503
        time.sleep(0.1)
    assert httpx.get(service.url + "/readyz").status_code == 503
    assert "REWARDFLOW_MODEL" in body and "offline" in body.lower()


def test_preprocessing_matches_the_checkpoint_image_processor(tiny_models) -> None:
    import torch
    from rewardflow_geneval.detector import InstanceDetector
    from transformers import AutoImageProcessor

    detector = InstanceDetector.load(str(tiny_models["detector"]), device=torch.device("cpu"), dtype=torch.float32)
    processor = AutoImageProcessor.from_pretrained(tiny_models["detector"])
    images = [np.random.default_rng(1).integers(0, 256, (120, 90, 3), dtype=np.uint8), random_images(1, 64, 64)[0]]
    reference = processor(images=images, return_tensors="pt")
    pixels, mask, _ = detector.pixel_batch(images)
    assert pixels.shape == reference["pixel_values"].shape
    assert torch.equal(mask, reference["pixel_mask"].long())
    one_grey_level = 1 / (255 * min(processor.image_std))
    assert (pixels - reference["pixel_values"]).abs().max() <= 1.01 * one_grey_level
