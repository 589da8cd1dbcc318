"""The merged-batch scoring step in-process: result checks, safe details, image decoding limits."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image
from rewardflow_kit import Batch, ItemFailure, ItemScore
from rewardflow_kit.scoring import check_result, decode_image, plain, score_requests
from rewardflow_proto import EncodedImage, ItemError, ScoreRequest, ScoreResponse, encode_response
from service_calls import JSON, MSGPACK, encoded, random_images

KEYS = ("a", "b")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, np.float32("nan")])
def test_non_finite_score_is_an_error_never_a_number(bad: float) -> None:
    scores, _, error = check_result(ItemScore({"a": 1.0, "b": bad}), KEYS)
    assert scores is None and error is not None and error.code == "non_finite" and "'b'" in error.message


def test_missing_key_and_wrong_type_are_score_failed() -> None:
    assert check_result(ItemScore({"a": 1.0}), KEYS)[2].code == "score_failed"  # type: ignore[union-attr]
    assert check_result(ItemScore({"a": 1.0, "b": "x"}), KEYS)[2].code == "score_failed"  # type: ignore[union-attr]
    assert check_result(0.5, KEYS)[2].code == "score_failed"  # type: ignore[union-attr]
    assert check_result(ItemFailure("bad_metadata", "no objects"), KEYS)[2] == ItemError("bad_metadata", "no objects")


def test_numpy_scores_become_floats() -> None:
    scores, _, error = check_result(ItemScore({"a": np.float32(0.5), "b": np.int64(2)}), KEYS)
    assert error is None and scores == {"a": 0.5, "b": 2.0} and all(type(v) is float for v in scores.values())


def test_details_are_made_encodable_in_both_formats() -> None:
    details = plain({"arr": np.arange(3), "x": np.float64("nan"), "big": 2**70, "text": "\ud800", 3: {"o": object()}})
    assert details["arr"] == [0, 1, 2] and details["x"] is None and details["big"] == str(2**70)
    response = ScoreResponse(scores={"a": [1.0]}, errors=[None], details=[details])
    for content_type in (MSGPACK, JSON):
        assert encode_response(response, content_type)


def test_corrupt_and_oversized_images_are_bad_image() -> None:
    with pytest.raises(ItemFailure) as corrupt:
        decode_image(EncodedImage(format="jpeg", data=b"\xff\xd8\xff garbage"), max_pixels=10**6)
    assert corrupt.value.code == "bad_image"
    big = encoded(np.zeros((40, 40, 3), np.uint8), "png")
    with pytest.raises(ItemFailure, match="exceeds the limit of 1000"):
        decode_image(big, max_pixels=1000)
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 5), 200, np.uint8)).save(buffer, format="PNG")  # grayscale file
    rgb = decode_image(EncodedImage(format="png", data=buffer.getvalue()), max_pixels=1000)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8 and (rgb == 200).all()


class Echo:
    name, version, model_id, device = "echo", "1", "", "cpu"
    score_keys = ("a", "b")
    score_range = {"a": (None, None), "b": (None, None)}  # noqa: RUF012
    max_batch_size = 8
    batches: list[int]

    def __init__(self) -> None:
        self.batches = []

    def load(self) -> None:
        pass

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        self.batches.append(len(batch))
        return [
            ItemScore({"a": float(i.mean()), "b": float(len(p))})
            for i, p in zip(batch.images, batch.prompts, strict=True)
        ]


def test_merged_requests_are_split_back_in_order() -> None:
    scorer = Echo()
    first = ScoreRequest(images=random_images(2, seed=1), prompts=["x", "yy"])
    second = ScoreRequest(images=[EncodedImage(format="png", data=b"nope"), random_images(1)[0]], prompts=["z", "www"])
    outcomes = score_requests(scorer, [first, second], max_pixels=10**6)  # type: ignore[arg-type]
    assert scorer.batches == [3]  # one model call for both requests, the corrupt image left out
    assert outcomes[0].scores["b"] == [1.0, 2.0] and outcomes[0].errors == [None, None]
    assert outcomes[1].scores["b"] == [None, 3.0] and outcomes[1].errors[0].code == "bad_image"  # type: ignore[union-attr]
    assert (outcomes[0].n_scored, outcomes[1].n_scored) == (2, 1)
