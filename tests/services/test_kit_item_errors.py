"""Per-item results: one bad item gets its error in its slot, the others their scores."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest
from rewardflow_proto import EncodedImage, ScoreRequest
from service_calls import encoded, random_images, score


@pytest.fixture(scope="module")
def probe_url(module_service_process: Callable) -> str:
    env = {"REWARDFLOW_MODEL": "/models/probe-v2", "REWARDFLOW_DEVICE": "cuda:7"}  # overrides; the probe ignores them
    return module_service_process("scorers:ProbeScorer", env=env).url


def test_model_and_device_settings_reach_the_scorer(probe_url: str) -> None:
    info = httpx.get(probe_url + "/v1/info").json()
    assert (info["model"], info["device"]) == ("/models/probe-v2", "cuda:7")
    response = score(probe_url, ScoreRequest(images=random_images(1), prompts=["a"]))
    assert (response.service, response.model) == ("probe", "/models/probe-v2")


def brightness(image: np.ndarray) -> float:
    return float(image.mean()) / 255


def test_each_failure_stays_in_its_slot(probe_url: str) -> None:
    images = list(random_images(6, 16, 16, seed=5))
    files: list[np.ndarray | EncodedImage] = list(images)
    files[4] = EncodedImage(format="png", data=b"\x89PNG\r\n\x1a\ntruncated")
    files[5] = encoded(images[5], "png")
    prompts = ["ok", "nan", "refuse", "inf", "ok", "ok"]
    response = score(probe_url, ScoreRequest(images=files, prompts=prompts))
    codes = [None if e is None else e.code for e in response.errors]
    assert codes == [None, "non_finite", "bad_metadata", "non_finite", "bad_image", None]
    assert response.scores["brightness"][0] == pytest.approx(brightness(images[0]))
    assert response.scores["brightness"][5] == pytest.approx(brightness(images[5]))
    assert response.scores["double"][5] == pytest.approx(2 * brightness(images[5]))
    assert all(response.scores[k][i] is None for k in ("brightness", "double") for i in (1, 2, 3, 4))
    assert "nan" in response.errors[1].message and "inf" in response.errors[3].message
    assert response.details is not None and response.details[0]["batch_size"] == 5  # the corrupt png never reached it


def test_whole_batch_exception_is_retried_item_by_item(probe_url: str) -> None:
    images = random_images(4, 8, 8, seed=2)
    response = score(probe_url, ScoreRequest(images=images, prompts=["a", "raise", "b", "c"]))
    assert [e is None for e in response.errors] == [True, False, True, True]
    assert response.errors[1].code == "score_failed"
    assert "crashed" in response.errors[1].message
    assert response.scores["brightness"][2] == pytest.approx(brightness(images[2]))
    assert response.details is not None and response.details[0]["batch_size"] == 1  # scored singly


def test_a_failed_item_is_not_counted_as_scored(probe_url: str) -> None:
    def scored() -> float:
        text = httpx.get(probe_url + "/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("rewardflow_images_scored_total{"))
        return float(line.split()[-1])

    before = scored()
    score(probe_url, ScoreRequest(images=random_images(3), prompts=["ok", "nan", "ok"]))
    assert scored() - before == 2


def test_group_ids_reach_the_scorer(probe_url: str) -> None:
    response = score(probe_url, ScoreRequest(images=random_images(3), prompts=["a"] * 3, group_ids=["g", "g", 7]))
    assert response.details is not None and response.details[0]["group_ids"] == ["g", "g", 7]


def test_raw_images_reach_the_scorer_as_read_only_views(probe_url: str) -> None:
    response = score(probe_url, ScoreRequest(images=random_images(2, 8, 8), prompts=["a", "b"]))
    assert response.details is not None and [d["read_only"] for d in response.details] == [True, True]


def test_scorer_validation_refuses_the_whole_request_with_422_naming_the_image(probe_url: str) -> None:
    from rewardflow_proto import encode_request

    images = random_images(3, 8, 8, seed=3)
    body = encode_request(ScoreRequest(images=images, prompts=["a", "b", "invalid"]))
    response = httpx.post(probe_url + "/v1/score", content=body, headers={"content-type": "application/msgpack"})
    assert response.status_code == 422
    from rewardflow_proto.codec import parse_body

    error = parse_body(response.content, "application/msgpack")["error"]
    assert error["field"] == "metadata[2].allow" and "image 2" in error["message"]
    allowed = ScoreRequest(images=images, prompts=["a", "b", "invalid"], metadata=[None, None, {"allow": True}])
    assert all(e is None for e in score(probe_url, allowed).errors)
