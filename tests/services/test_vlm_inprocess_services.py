"""unifiedreward, qwenvl and deqa over real HTTP with tiny Qwen2-VL judges loaded in-process (no download).

The scripted judges (rewardflow_vlm.tiny) answer one fixed text greedily, whatever the image; deqa runs a random
one and is checked against its logits computed here by hand (transformers, the same weights, the same prompt
written out token by token).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import torch
from rewardflow_proto import ScoreRequest
from rewardflow_vlm.tiny import write_tiny_qwen2vl
from service_calls import random_images, score

QWENVL_ANSWER = "<Thought>fine</Thought><Score>4</Score>"


def inprocess_env(model: Path, **extra: str) -> dict[str, str]:
    env = {"REWARDFLOW_MODEL": str(model), "REWARDFLOW_VLM_BACKEND": "in-process", "REWARDFLOW_DEVICE": "cpu"}
    return env | {"HF_HUB_OFFLINE": "1", "REWARDFLOW_VLM_MAX_NEW_TOKENS": "24"} | extra


def mixed_images(seed: int) -> list[np.ndarray]:
    return [random_images(1, h, w, seed=seed + i)[0] for i, (h, w) in enumerate([(40, 60), (56, 56), (30, 20)])]


@pytest.fixture(scope="module")
def judge_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm-judges")
    return {
        "final4": write_tiny_qwen2vl(root / "final4", answer="Final Score: 4"),
        "qwenvl": write_tiny_qwen2vl(root / "qwenvl", answer=QWENVL_ANSWER),
        "random": write_tiny_qwen2vl(root / "random", seed=3),
    }


def test_unifiedreward_pointwise_rating_over_five_with_the_answer(
    module_service_process: Callable, judge_dirs: dict[str, Path]
) -> None:
    service = module_service_process("unifiedreward", env=inprocess_env(judge_dirs["final4"]), timeout_s=900)
    images = mixed_images(0)
    response = score(service.url, ScoreRequest(images=images, prompts=["a red car", "a {cat}", "x"]))
    assert response.errors == [None] * 3
    assert response.scores["score"] == [0.8] * 3 and response.scores["rating"] == [4.0] * 3
    assert [d["answer"] for d in response.details] == ["Final Score: 4"] * 3
    info = httpx.get(service.url + "/v1/info", timeout=10).json()
    assert info["score_keys"] == ["score", "rating"] and info["score_range"]["score"] == [0.2, 1.0]


def test_unifiedreward_pairwise_a_first_image_bias_cancels_out(
    module_service_process: Callable, judge_dirs: dict[str, Path]
) -> None:
    # This judge always says 'Image 1 is better.' (it is the final4 chain's sibling); every image is shown first
    # in half of its comparisons, so every win rate is 0.5 and the calls per group follow the stated bound.
    model = write_tiny_qwen2vl(judge_dirs["final4"].parent / "first", answer="Image 1 is better.")
    env = inprocess_env(
        model, REWARDFLOW_UNIFIEDREWARD_MODE="pairwise", REWARDFLOW_UNIFIEDREWARD_MAX_CALLS_PER_GROUP="4"
    )
    service = module_service_process("unifiedreward", env=env, timeout_s=900)
    groups = ["a", "a", "b", "b", "b", "b", "a", "b", None, "c"]
    images = list(random_images(len(groups), 28, 28, seed=5))
    request = ScoreRequest(images=images, prompts=["a dog"] * len(groups), group_ids=groups)
    response = score(service.url, request)
    codes = [e.code if e else None for e in response.errors]
    assert codes == [None] * 8 + ["bad_group", "bad_group"]
    assert response.scores["score"][:8] == [0.5] * 8
    calls = [d["judge_calls_in_group"] for d in response.details[:8]]
    assert calls == [3, 3, 5, 5, 5, 5, 3, 5], "group a: all 3 pairs; group b (n=5, bound 4): 5 calls"
    for d in response.details[:8]:
        assert d["wins"] + d["losses"] == len(d["comparisons"]) and d["ties"] == d["unparsed"] == 0
        assert all(c["answer"] == "Image 1 is better." for c in d["comparisons"])


def test_qwenvl_score_tag_over_five(module_service_process: Callable, judge_dirs: dict[str, Path]) -> None:
    service = module_service_process("qwenvl", env=inprocess_env(judge_dirs["qwenvl"]), timeout_s=900)
    response = score(service.url, ScoreRequest(images=mixed_images(1), prompts=["p"] * 3))
    assert response.errors == [None] * 3
    assert response.scores["score"] == [0.8] * 3 and response.scores["rating"] == [4.0] * 3
    assert [d["answer"] for d in response.details] == [QWENVL_ANSWER] * 3


def test_a_random_judge_gets_unparsable_answer_errors_with_its_text_never_a_zero(
    module_service_process: Callable, judge_dirs: dict[str, Path]
) -> None:
    service = module_service_process("qwenvl", env=inprocess_env(judge_dirs["random"]), timeout_s=900)
    response = score(service.url, ScoreRequest(images=mixed_images(2)[:2], prompts=["p"] * 2))
    assert response.scores["score"] == [None, None]
    for error in response.errors:
        assert error is not None and error.code == "unparsable_answer"
        assert "no '<Score>N</Score>'" in error.message and "the judge answered: '" in error.message


def deqa_by_hand(model_dir: Path, images: list[np.ndarray]) -> list[float]:
    """DeQA's expected quality for each image, with transformers and the prompt written out here (one model load)."""
    from transformers import AutoTokenizer, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = Qwen2VLImageProcessorPil.from_pretrained(model_dir)
    model = Qwen2VLForConditionalGeneration.from_pretrained(model_dir).eval()
    return [deqa_one_by_hand(tokenizer, processor, model, image) for image in images]


def deqa_one_by_hand(tokenizer: Any, processor: Any, model: Any, image: np.ndarray) -> float:
    """One image's softmax over the level words' logits, weighted 5..1."""
    h, w = image.shape[:2]
    side = max(h, w)
    square = np.empty((side, side, 3), np.uint8)
    square[:] = [int(m * 255) for m in processor.image_mean]
    square[(side - h) // 2 : (side - h) // 2 + h, (side - w) // 2 : (side - w) // 2 + w] = image
    vision = processor(images=[square], return_tensors="pt")
    count = int(vision["image_grid_thw"][0].prod()) // 4
    text = (
        "<|im_start|>user\n<|vision_start|>" + "<|image_pad|>" * count + "<|vision_end|>"
        "How would you rate the quality of this image?<|im_end|>\n<|im_start|>assistant\nThe quality of the image is"
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    levels = [
        tokenizer(" " + word, add_special_tokens=False)["input_ids"][0]
        for word in ("excellent", "good", "fair", "poor", "bad")
    ]
    with torch.no_grad():
        logits = model(
            input_ids=ids,
            pixel_values=vision["pixel_values"],
            image_grid_thw=vision["image_grid_thw"],
            mm_token_type_ids=(ids == model.config.image_token_id).long(),
        ).logits[0, -1, levels]
    return float(torch.softmax(logits.double(), -1) @ torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64))


def test_deqa_expected_quality_equals_the_softmax_of_the_level_logits(
    module_service_process: Callable, judge_dirs: dict[str, Path]
) -> None:
    service = module_service_process("deqa", env=inprocess_env(judge_dirs["random"]), timeout_s=900)
    images = mixed_images(3)
    response = score(service.url, ScoreRequest(images=images, prompts=["p"] * 3))
    assert response.errors == [None] * 3
    expected = deqa_by_hand(judge_dirs["random"], images)
    np.testing.assert_allclose(response.scores["quality"], expected, atol=1e-4)
    np.testing.assert_allclose(response.scores["score"], np.array(expected) / 5, atol=1e-4 / 5)
    assert np.ptp(expected) > 1e-3, "the images must score differently for the check to mean anything"
    for detail in response.details:
        assert list(detail["probabilities"]) == ["excellent", "good", "fair", "poor", "bad"]
        assert sum(detail["probabilities"].values()) == pytest.approx(1.0)


def test_deqa_refuses_a_served_backend_at_load(service_process: Callable, judge_dirs: dict[str, Path]) -> None:
    env = inprocess_env(judge_dirs["random"], REWARDFLOW_VLM_BACKEND="served")
    service = service_process("deqa", env=env, wait=None)
    assert service.process.wait(timeout=300) == 3
    assert "REWARDFLOW_VLM_BACKEND='served'" in service.log().strip().splitlines()[-1]
