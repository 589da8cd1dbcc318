"""The clipscore service over HTTP on a tiny random CLIP: cosine, logits/30 (Flow-GRPO), 2.5*max(cos,0) (Hessel)."""

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

PROMPTS = ["a photo of a cat", "a red car", "a big tree", "a photo of a cat"]
COS_ATOL = 1e-5  # same pixels reach the model; float32 noise only


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip_dir(tmp_path_factory.mktemp("clipscore-clip"), seed=3)


@pytest.fixture(scope="module")
def clipscore_url(module_service_process: Callable, clip_dir: Path) -> str:
    return module_service_process("clipscore", env=service_env(clip_dir)).url


def test_scores_follow_the_three_formulas_on_clip_logits(clipscore_url: str, clip_dir: Path) -> None:
    images = photo_like(4, SHORTEST_EDGE, SHORTEST_EDGE, seed=2)
    response = score(clipscore_url, ScoreRequest(images=images, prompts=PROMPTS))
    cosine = reference_logits(clip_dir, images, PROMPTS) / 100.0  # the tiny model's logit scale is exactly 100
    np.testing.assert_allclose(response.scores["cosine"], cosine, rtol=0, atol=COS_ATOL)
    np.testing.assert_allclose(response.scores["score"], cosine * 100 / 30, rtol=0, atol=COS_ATOL * 4)
    np.testing.assert_allclose(response.scores["hessel"], 2.5 * np.maximum(cosine, 0), rtol=0, atol=COS_ATOL * 3)
    assert np.ptp(cosine) > 100 * COS_ATOL


def test_info(clipscore_url: str) -> None:
    info = httpx.get(clipscore_url + "/v1/info", timeout=10).json()
    assert (info["name"], info["score_keys"]) == ("clipscore", ["score", "cosine", "hessel"])
    assert info["score_range"]["score"] == pytest.approx([-100 / 30, 100 / 30], rel=1e-5)
    assert info["score_range"]["hessel"] == [0.0, 2.5]


@pytest.mark.slow
def test_matching_image_scores_highest_and_opposite_clips_to_zero(
    service_process: Callable, clip_dir: Path, tmp_path: Path
) -> None:
    prompt = "a red car"
    text = reference_text_embeddings(clip_dir, [prompt])[0]
    images = photo_like(4, SHORTEST_EDGE, SHORTEST_EDGE, seed=11)
    aligned = write_aligned_clip(clip_dir, tmp_path / "aligned", images[:2], torch.stack([text, -text]))
    url = service_process("clipscore", env=service_env(aligned)).url
    scores = score(url, ScoreRequest(images=images, prompts=[prompt] * 4)).scores
    assert np.argmax(scores["score"]) == 0
    assert scores["cosine"][0] == pytest.approx(1.0, abs=1e-5)
    assert scores["hessel"][0] == pytest.approx(2.5, abs=1e-4)
    assert scores["score"][0] == pytest.approx(100 / 30, abs=1e-4)
    assert scores["cosine"][1] == pytest.approx(-1.0, abs=1e-5)
    assert scores["hessel"][1] == 0.0, "Hessel's CLIPScore clips negative cosines to 0"
