"""The pickscore service over real HTTP on a tiny random CLIP: scores equal CLIPModel's logits / 26."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from rewardflow_proto import ScoreRequest
from service_calls import score
from vision_clip_fixtures import (
    SHORTEST_EDGE,
    photo_like,
    reference_logits,
    reference_text_embeddings,
    service_env,
    write_aligned_clip,
    write_clip_dir,
)

PROMPTS = ["a photo of a cat", "a red car", "a photo of a cat", "a big tree", "text says hello", "a dog on the sea"]
# Same pixels reach the model (images at the processor's shortest edge need no resize): float32 noise only.
EXACT_ATOL = 1e-3  # on raw = 100 * cos
# Resized images: our resize is within one grey level of PIL's on a few pixels.
RESIZED_ATOL = 0.05


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip_dir(tmp_path_factory.mktemp("pickscore-clip"))


@pytest.fixture(scope="module")
def pickscore_url(module_service_process: Callable, clip_dir: Path) -> str:
    return module_service_process("pickscore", env=service_env(clip_dir)).url


def test_scores_equal_clip_logits_over_26(pickscore_url: str, clip_dir: Path) -> None:
    images = photo_like(6, SHORTEST_EDGE, SHORTEST_EDGE, seed=1)
    response = score(pickscore_url, ScoreRequest(images=images, prompts=PROMPTS))
    assert response.errors == [None] * 6
    expected_raw = reference_logits(clip_dir, images, PROMPTS)
    np.testing.assert_allclose(response.scores["raw"], expected_raw, rtol=0, atol=EXACT_ATOL)
    np.testing.assert_allclose(response.scores["score"], expected_raw / 26, rtol=0, atol=EXACT_ATOL / 26)
    assert np.ptp(expected_raw) > 100 * EXACT_ATOL, "the pairs must score differently for the check to mean anything"


def test_resized_images_of_several_sizes_match_within_preprocessing_tolerance(
    pickscore_url: str, clip_dir: Path
) -> None:
    images = [photo_like(1, h, w, seed=h)[0] for h, w in [(64, 80), (120, 45), (31, 50)]]
    prompts = PROMPTS[:3]
    response = score(pickscore_url, ScoreRequest(images=images, prompts=prompts))
    np.testing.assert_allclose(response.scores["raw"], reference_logits(clip_dir, images, prompts), atol=RESIZED_ATOL)


def test_prompts_are_truncated_at_77_tokens(pickscore_url: str) -> None:
    from transformers import CLIPTokenizer

    image = photo_like(1, SHORTEST_EDGE, SHORTEST_EDGE, seed=4)
    long = "a photo of a red cat on the sea with a big tree " * 12  # ~150 tokens
    images = np.concatenate([image, image, image])
    response = score(pickscore_url, ScoreRequest(images=images, prompts=[long, long + "dog dog dog", "a cat"]))
    raw = response.scores["raw"]
    assert raw[0] == pytest.approx(raw[1], abs=1e-5), "words past token 77 must not change the score"
    assert raw[0] != pytest.approx(raw[2], abs=1e-3)
    assert len(CLIPTokenizer.from_pretrained(pickscore_dir_of(pickscore_url))(long)["input_ids"]) > 77


def pickscore_dir_of(url: str) -> str:
    return httpx.get(url + "/v1/info", timeout=10).json()["model"]


def test_info_reports_model_keys_and_ranges(pickscore_url: str, clip_dir: Path) -> None:
    info = httpx.get(pickscore_url + "/v1/info", timeout=10).json()
    assert info["name"] == "pickscore"
    assert info["model"] == str(clip_dir)
    assert info["score_keys"] == ["score", "raw"]
    assert info["score_range"]["raw"] == pytest.approx([-100, 100], rel=1e-5)
    assert info["score_range"]["score"] == pytest.approx([-100 / 26, 100 / 26], rel=1e-5)


@pytest.mark.slow
def test_image_whose_embedding_equals_the_prompts_scores_highest(
    service_process: Callable, clip_dir: Path, tmp_path: Path
) -> None:
    prompt = "a photo of a cat"
    text = reference_text_embeddings(clip_dir, [prompt])[0]
    images = photo_like(5, SHORTEST_EDGE, SHORTEST_EDGE, seed=9)
    # Image 0's embedding is the prompt's, image 1's its opposite; 2-4 land wherever the weights put them.
    aligned = write_aligned_clip(clip_dir, tmp_path / "aligned", images[:2], torch.stack([text, -text]))
    url = service_process("pickscore", env=service_env(aligned)).url
    response = score(url, ScoreRequest(images=images, prompts=[prompt] * 5))
    raw = np.array(response.scores["raw"])
    assert raw.argmax() == 0 and raw.argmin() == 1
    assert raw[0] == pytest.approx(100.0, abs=1e-3)  # logit_scale * cos(x, x)
    assert raw[1] == pytest.approx(-100.0, abs=1e-3)
    assert response.scores["score"][0] == pytest.approx(100 / 26, abs=1e-4)
    assert np.all(np.abs(raw[2:]) < 99.0)
