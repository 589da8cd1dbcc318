"""The OCR service over real HTTP with real OCR (RapidOCR PP-OCRv4): renders of known text score by the paper rule."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import numpy as np
import pytest
from ocr_renders import expected_accuracy, generated_phrases, generated_renders, render
from rewardflow_proto import ScoreRequest, ScoreResponse, decode_response, encode_request
from service_calls import JSON, MSGPACK, error_of


@pytest.fixture(scope="module")
def ocr_url(module_service_process: Callable) -> str:
    return module_service_process("ocr", timeout_s=120).url


def ocr_score(url: str, images: list[np.ndarray], prompts: list[str], metadata: list | None = None) -> ScoreResponse:
    """POST one msgpack request; OCR of many 512 px images on a busy 2-core machine may take a while."""
    body = encode_request(ScoreRequest(images=images, prompts=prompts, metadata=metadata), MSGPACK)
    reply = httpx.post(url + "/v1/score", content=body, headers={"content-type": MSGPACK}, timeout=600)
    assert reply.status_code == 200, reply.content[:500]
    return decode_response(reply.content, MSGPACK)


def test_info_names_the_service_and_its_bundled_model(ocr_url: str) -> None:
    info = httpx.get(ocr_url + "/v1/info").json()
    assert (info["name"], info["score_keys"], info["score_range"]) == ("ocr", ["accuracy"], {"accuracy": [0.0, 1.0]})
    assert info["model"] == "rapidocr-onnxruntime/ch_PP-OCRv4"


def test_exact_text_scores_one_and_details_carry_what_was_read(ocr_url: str) -> None:
    response = ocr_score(ocr_url, [render("Hello World")], ['a neon sign that reads "Hello World"'])
    assert response.errors == [None]
    assert response.scores["accuracy"] == [1.0]
    details = response.details[0]
    assert details["target"] == "helloworld"
    assert details["distance"] == 0
    assert "".join(details["recognized_text"].split()).lower() == "helloworld"


def test_misspelled_render_scores_the_edit_distance_value(ocr_url: str) -> None:
    target, drawn = "SUNSHINE BAKERY", "SUNSHNE BAKRY"
    expected = expected_accuracy(drawn, target)
    assert expected == pytest.approx(1 - 2 / 14)
    response = ocr_score(ocr_url, [render(drawn)], [f'a shop sign "{target}"'])
    assert response.scores["accuracy"][0] == pytest.approx(expected, abs=1e-12), response.details
    assert response.details[0]["distance"] == 2


def test_blank_image_scores_zero(ocr_url: str) -> None:
    blank = np.full((512, 512, 3), 255, dtype=np.uint8)
    response = ocr_score(ocr_url, [blank], ['a poster saying "Grand Opening"'])
    assert response.scores["accuracy"] == [0.0]
    assert response.details[0] == {"recognized_text": "", "target": "grandopening", "distance": 12}


def test_metadata_target_and_typographic_quotes(ocr_url: str) -> None:
    images = [render("Corner Shop"), render("Hot Tea"), render("Hot Tea")]
    prompts = ["a shop front at dusk", "a mug with \u201cHot Tea\u201d on it", 'a mug with "Cold Tea" on it']
    response = ocr_score(ocr_url, images, prompts, metadata=[{"target_text": "Corner Shop"}, None, None])
    assert response.scores["accuracy"][:2] == [1.0, 1.0]
    assert response.scores["accuracy"][2] == pytest.approx(expected_accuracy("Hot Tea", "Cold Tea"))


@pytest.mark.parametrize("content_type", [MSGPACK, JSON])
def test_prompt_without_quotes_or_metadata_is_a_4xx_naming_the_image(ocr_url: str, content_type: str) -> None:
    images = [render("abc", size=64, font_size=20)] * 3
    prompts = ['a sign "abc"', "a sign with no quoted text", 'another "abc"']
    body = encode_request(ScoreRequest(images=images, prompts=prompts, metadata=[{}, {"tag": "x"}, {}]), content_type)
    reply = httpx.post(ocr_url + "/v1/score", content=body, headers={"content-type": content_type}, timeout=60)
    assert reply.status_code == 422
    error = error_of(reply)
    assert error["code"] == "invalid_request"
    assert error["field"] == "prompts[1]"
    assert "image 1" in error["message"] and "target_text" in error["message"]


@pytest.mark.slow
def test_generated_set_of_60_phrases_reads_back_with_mean_accuracy_over_0_9(ocr_url: str) -> None:
    phrases = generated_phrases(60, seed=0)
    images = generated_renders(phrases, seed=0)
    scores: list[float] = []
    misses: list[tuple[str, str]] = []
    for start in range(0, len(phrases), 20):
        chunk = phrases[start : start + 20]
        response = ocr_score(ocr_url, images[start : start + 20], [f'a sign that says "{p}"' for p in chunk])
        assert response.errors == [None] * len(chunk)
        got = response.scores["accuracy"]
        scores.extend(got)
        misses += [(p, d["recognized_text"]) for p, d, s in zip(chunk, response.details, got, strict=True) if s < 1]
    mean = float(np.mean(scores))
    print(f"\nOCR mean accuracy over {len(phrases)} generated renders: {mean:.4f}; misread: {misses}")
    assert mean >= 0.9, misses
    assert len(set(phrases)) >= 50
