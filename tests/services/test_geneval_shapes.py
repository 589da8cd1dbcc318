"""The shapes world: renders of GenEval metadata, the exact detector under GenEval's rules, the service with it."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict

import httpx
import numpy as np
import pytest
from rewardflow_geneval.metadata import SHAPES, TAGS, MetadataError, parse_metadata
from rewardflow_geneval.prompts import generate, main
from rewardflow_geneval.shapes import IMAGE_SIZE, PALETTE, mask_box, object_mask, render, render_scene, scene_for
from rewardflow_geneval.shapes_detector import judge
from rewardflow_proto import ScoreRequest, encode_request
from scipy import ndimage
from service_calls import MSGPACK, error_of, post, score

RED_SQUARE = {"tag": "colors", "include": [{"class": "square", "count": 1, "color": "red"}]}
THREE_CIRCLES = {
    "tag": "counting",
    "include": [{"class": "circle", "count": 3}],
    "exclude": [{"class": "circle", "count": 4}],
}
FOUR_CIRCLES = {
    "tag": "counting",
    "include": [{"class": "circle", "count": 4}],
    "exclude": [{"class": "circle", "count": 5}],
}
CIRCLE_LEFT_OF_SQUARE = {
    "tag": "position",
    "include": [{"class": "square", "count": 1}, {"class": "circle", "count": 1, "position": ["left of", 0]}],
}


@pytest.fixture(scope="module")
def entries() -> list[dict]:
    """Every prompt of the shapes world (126) three times: 378 entries over all six tags."""
    train, test = generate(105, 21, seed=0, world=SHAPES)
    return (train + test) * 3


@pytest.fixture(scope="module")
def renders(entries) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [render(entry, rng) for entry in entries]


def strict_share(verdicts: list) -> float:
    return sum(v.strict for v in verdicts) / len(verdicts)


def test_renders_are_pure_palette_on_white_with_the_entrys_objects_only(entries) -> None:
    rng = np.random.default_rng(1)
    allowed = {(255, 255, 255), *PALETTE.values()}
    for entry in entries[:126]:
        objects = scene_for(entry, rng)
        image = render_scene(objects)
        assert image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and image.dtype == np.uint8
        assert {tuple(c) for c in np.unique(image.reshape(-1, 3), axis=0)} <= allowed
        wanted = sorted((c["class"], c["count"]) for c in entry["include"])
        drawn = sorted((name, sum(o.shape == name for o in objects)) for name in {o.shape for o in objects})
        assert drawn == wanted, entry["prompt"]
        for obj in objects:
            assert 10 <= obj.size <= 26
            x1, y1, x2, y2 = mask_box(object_mask(obj))
            assert 0 <= x1 and 0 <= y1 and x2 <= IMAGE_SIZE and y2 <= IMAGE_SIZE
        for clause, colour in ((c["class"], c.get("color")) for c in entry["include"]):
            assert colour is None or all(o.color == colour for o in objects if o.shape == clause)


def test_render_is_seeded_and_refuses_what_no_scene_can_show() -> None:
    assert np.array_equal(render(RED_SQUARE, np.random.default_rng(5)), render(RED_SQUARE, np.random.default_rng(5)))
    five = {"tag": "counting", "include": [{"class": "circle", "count": 5}], "prompt": "a photo of five circles"}
    with pytest.raises(ValueError, match=r"a photo of five circles.*at most 4"):
        render(five, np.random.default_rng(0))
    with pytest.raises(MetadataError, match="shapes world"):
        render({"tag": "single_object", "include": [{"class": "dog", "count": 1}]}, np.random.default_rng(0))


def test_ground_truth_renders_are_judged_correct_on_every_tag(entries, renders) -> None:
    by_tag: dict[str, list] = defaultdict(list)
    for entry, image in zip(entries, renders, strict=True):
        by_tag[entry["tag"]].append(judge(image, entry))
    shares = {tag: strict_share(verdicts) for tag, verdicts in by_tag.items()}
    overall = strict_share([v for verdicts in by_tag.values() for v in verdicts])
    print(f"ground truth strict: {overall:.3f} overall; " + ", ".join(f"{t} {s:.3f}" for t, s in shares.items()))
    assert set(shares) == set(TAGS)
    assert overall >= 0.99
    assert all(share >= 0.99 for share in shares.values()), shares
    assert all(v.score == 1.0 for verdicts in by_tag.values() for v in verdicts if v.strict)


def test_blurred_noisy_renders_still_read_correctly(entries, renders) -> None:
    """What a model draws: soft edges (Gaussian blur 0.7 px), per-pixel noise and an image-wide colour cast."""
    rng = np.random.default_rng(2)
    verdicts = []
    for entry, image in zip(entries, renders, strict=True):
        soft = ndimage.gaussian_filter(image.astype(np.float32), (0.7, 0.7, 0))
        soft += rng.normal(0, 6, soft.shape) + rng.normal(0, 10, (1, 1, 3))
        verdicts.append(judge(np.clip(soft, 0, 255).astype(np.uint8), entry))
    share = strict_share(verdicts)
    print(f"blurred + noisy strict: {share:.3f}")
    assert share >= 0.95


def test_shuffled_captions_score_low(entries, renders) -> None:
    rng = np.random.default_rng(3)
    order = rng.permutation(len(entries))
    verdicts = [
        judge(renders[i], entries[j]) for i, j in enumerate(order) if entries[i]["prompt"] != entries[j]["prompt"]
    ]
    share = strict_share(verdicts)
    print(f"shuffled captions strict: {share:.3f} over {len(verdicts)}")
    assert len(verdicts) > 300
    assert share < 0.2


def test_a_missing_or_extra_object_fails_the_count_or_the_exclude() -> None:
    rng = np.random.default_rng(4)
    three = scene_for(THREE_CIRCLES, rng)
    two = judge(render_scene(three[:2]), THREE_CIRCLES)
    assert not two.strict
    assert two.reasons == ["expected at least 3 circle, found 2"]
    assert two.credits == [1 - 1 / 3] and two.score == pytest.approx(2 / 3)
    four = judge(render(FOUR_CIRCLES, rng), THREE_CIRCLES)
    assert not four.strict
    assert four.reasons == ["expected fewer than 4 circle, found 4"]
    assert four.score == pytest.approx(2 / 3)  # exclude clauses earn no dense credit


def test_a_wrong_colour_fails_the_colour_clause() -> None:
    (square,) = scene_for(RED_SQUARE, np.random.default_rng(5))
    verdict = judge(render_scene([dataclasses.replace(square, color="blue")]), RED_SQUARE)
    assert not verdict.strict
    assert verdict.reasons == ["expected 1 red square, found 0 red (colours: 1 blue)"]
    assert verdict.credits == [1.0, 0.0] and verdict.score == 0.5


def test_a_swapped_position_fails_the_relation() -> None:
    square, circle = scene_for(CIRCLE_LEFT_OF_SQUARE, np.random.default_rng(6))
    assert judge(render_scene([square, circle]), CIRCLE_LEFT_OF_SQUARE).strict
    # Swapping the centres keeps the gap between the boxes (it depends only on the centre offset and the sizes).
    swapped = [
        dataclasses.replace(square, cx=circle.cx, cy=circle.cy),
        dataclasses.replace(circle, cx=square.cx, cy=square.cy),
    ]
    verdict = judge(render_scene(swapped), CIRCLE_LEFT_OF_SQUARE)
    assert not verdict.strict
    (reason,) = verdict.reasons
    assert reason.startswith("expected circle left of square, found circle ") and "right of" in reason
    assert verdict.credits == [1.0, 1.0, 0.0, 1.0] and verdict.score == 0.75  # Flow-GRPO's 0.0-then-1.0 quirk


def test_metadata_in_the_shapes_world_names_its_vocabulary() -> None:
    with pytest.raises(MetadataError) as info:
        parse_metadata({"tag": "single_object", "include": [{"class": "dog", "count": 1}]}, SHAPES)
    assert info.value.field == "include[0].class" and "circle, square, triangle" in info.value.message
    with pytest.raises(MetadataError) as info:
        parse_metadata({"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "purple"}]}, SHAPES)
    assert info.value.field == "include[0].color" and "red, green, blue, yellow" in info.value.message
    with pytest.raises(MetadataError, match="80 COCO"):
        parse_metadata(RED_SQUARE)  # the default world is still COCO


def test_shapes_prompt_splits_are_disjoint_and_cover_every_tag(tmp_path, capsys) -> None:
    train, test = generate(105, 21, seed=0, world=SHAPES)
    train_prompts, test_prompts = {e["prompt"] for e in train}, {e["prompt"] for e in test}
    assert (len(train_prompts), len(test_prompts)) == (105, 21)
    assert not train_prompts & test_prompts
    assert {e["tag"] for e in train} == set(TAGS) == {e["tag"] for e in test}
    assert all(parse_metadata(e, SHAPES).prompt == e["prompt"] for e in train + test)
    with pytest.raises(ValueError, match="only 126"):
        generate(110, 20, seed=0, world=SHAPES)
    assert main(["--world", "shapes", "--out", str(tmp_path), "--n", "100", "--n-test", "26"]) == 0
    assert "test_metadata.jsonl: 26 prompts" in capsys.readouterr().out
    written = [json.loads(line) for line in (tmp_path / "test_metadata.jsonl").read_text().splitlines()]
    assert {e["tag"] for e in written} == set(TAGS)


@pytest.fixture(scope="module")
def shapes_service(module_service_process):
    """The geneval service on the shapes detector; the model settings point nowhere, so nothing may load."""
    env = {
        "REWARDFLOW_GENEVAL_DETECTOR": "shapes",
        "REWARDFLOW_MODEL": "/nonexistent/mask2former",
        "REWARDFLOW_CLIP_MODEL": "/nonexistent/clip",
        "HF_HUB_OFFLINE": "1",
        "REWARDFLOW_MAX_QUEUE_DELAY_MS": "20",
    }
    return module_service_process("geneval", env=env, timeout_s=120)


@pytest.mark.slow
def test_service_on_the_shapes_detector_scores_renders_over_http(shapes_service) -> None:
    assert httpx.get(shapes_service.url + "/readyz").json() == {"status": "ready"}
    info = httpx.get(shapes_service.url + "/v1/info").json()
    assert info["model"] == "shapes-detector" and info["device"] == "cpu"
    rng = np.random.default_rng(7)
    metadata = [RED_SQUARE, THREE_CIRCLES, CIRCLE_LEFT_OF_SQUARE, RED_SQUARE]
    images = [render(entry, rng) for entry in metadata[:3]]
    (square,) = scene_for(RED_SQUARE, rng)
    images.append(render_scene([dataclasses.replace(square, color="green")]))
    reply = score(shapes_service.url, ScoreRequest(images=np.stack(images), prompts=["p"] * 4, metadata=metadata))
    assert reply.errors == [None] * 4
    assert reply.scores["strict"] == [1.0, 1.0, 1.0, 0.0]
    assert reply.scores["score"] == [1.0, 1.0, 1.0, 0.5]
    assert reply.details[0]["objects"][0]["color"] == "red" and reply.details[0]["objects"][0]["score"] == 1.0
    assert reply.details[3]["failed"] == ["expected 1 red square, found 0 red (colours: 1 green)"]


@pytest.mark.slow
def test_service_on_the_shapes_detector_refuses_coco_classes(shapes_service) -> None:
    dog = {"tag": "single_object", "include": [{"class": "dog", "count": 1}]}
    images = np.stack([render(RED_SQUARE, np.random.default_rng(0))] * 2)
    request = ScoreRequest(images=images, prompts=["a", "b"], metadata=[RED_SQUARE, dog])
    response = post(shapes_service.url, encode_request(request, MSGPACK))
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "metadata[1].include[0].class"
    assert "image 1" in error["message"] and "circle, square, triangle" in error["message"]
