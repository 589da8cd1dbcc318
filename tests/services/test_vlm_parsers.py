"""The VLM judges' pure parts: answer parsers on the answer formats and malformed answers, templates, the pairwise
schedule and win rates, DeQA's readout, and the served backend's request body."""

from __future__ import annotations

import base64
import io
from collections import Counter

import numpy as np
import pytest
import torch
from judge_answers import PAIRWISE, POINTWISE, QWENVL
from PIL import Image
from rewardflow_deqa.readout import LEVELS, expected_quality, pad_to_square
from rewardflow_qwenvl.parsing import Unparsable as QwenUnparsable
from rewardflow_qwenvl.parsing import parse_score_tag
from rewardflow_unifiedreward.pairs import calls_bound, pair_schedule, tally
from rewardflow_unifiedreward.parsing import Unparsable, parse_final_score, parse_preference
from rewardflow_unifiedreward.templates import PAIRWISE as PAIRWISE_TEMPLATE
from rewardflow_unifiedreward.templates import POINTWISE as POINTWISE_TEMPLATE
from rewardflow_vlm import JudgeFailure, JudgeQuery
from rewardflow_vlm.served import answer_text, chat_body, is_retryable


@pytest.mark.parametrize(("answer", "rating"), list(POINTWISE.values()), ids=list(POINTWISE))
def test_final_score_parser(answer: str, rating: float | None) -> None:
    if rating is None:
        with pytest.raises(Unparsable):
            parse_final_score(answer)
    else:
        assert parse_final_score(answer) == rating


@pytest.mark.parametrize(("answer", "verdict"), list(PAIRWISE.items()))
def test_preference_parser(answer: str, verdict: int | None) -> None:
    if verdict is None:
        with pytest.raises(Unparsable):
            parse_preference(answer)
    else:
        assert parse_preference(answer) == verdict


@pytest.mark.parametrize(("answer", "score"), list(QWENVL.items()))
def test_score_tag_parser(answer: str, score: int | None) -> None:
    if score is None:
        with pytest.raises(QwenUnparsable):
            parse_score_tag(answer)
    else:
        assert parse_score_tag(answer) == score


def test_templates_fill_the_caption_verbatim_and_mark_the_image_for_served_llava_only() -> None:
    caption = "a {weird} caption with ] and {prompt}"
    served = POINTWISE_TEMPLATE.render(caption, served=True)
    local = POINTWISE_TEMPLATE.render(caption, served=False)
    assert served == "<image>\n" + local
    assert local.endswith(f"Text Caption: [{caption}]") and "'Final Score:'" in local
    assert PAIRWISE_TEMPLATE.render("x", served=True) == PAIRWISE_TEMPLATE.render("x", served=False)
    assert '"Image 1 is better."' in PAIRWISE_TEMPLATE.text


@pytest.mark.parametrize("n", [2, 3, 5, 8, 11])
def test_small_groups_compare_every_pair_once(n: int) -> None:
    pairs = pair_schedule(n, max_calls=64)
    assert sorted(tuple(sorted(p)) for p in pairs) == [(i, j) for i in range(n) for j in range(i + 1, n)]
    assert calls_bound(n, 64) == n * (n - 1) // 2


@pytest.mark.parametrize(("n", "max_calls"), [(24, 64), (24, 100), (64, 64), (12, 20), (30, 7)])
def test_large_groups_stay_within_the_bound_and_are_balanced(n: int, max_calls: int) -> None:
    pairs = pair_schedule(n, max_calls)
    assert len(pairs) <= max(max_calls, n) and len(pairs) == calls_bound(n, max_calls)
    assert len(set(pairs)) == len(pairs) and all(a != b for a, b in pairs)
    appearances = Counter(i for pair in pairs for i in pair)
    shown_first = Counter(a for a, _ in pairs)
    assert set(appearances.values()) == {2 * len(pairs) // n}, "every image meets as many opponents"
    assert set(shown_first.values()) == {len(pairs) // n}, "and is shown first as often as second"


def test_win_rates_count_ties_half_and_leave_out_unreadable_answers() -> None:
    pairs = [(0, 1), (2, 0), (1, 2), (0, 1)]
    verdicts = [1, 0, 2, None]  # 0 beats 1; 2 ties 0; 2 beats 1; unreadable
    result = tally(3, pairs, verdicts, ["a", "b", "c", "d"])
    assert [t.win_rate() for t in result] == [0.75, 0.0, 0.75]
    assert (result[0].wins, result[0].ties, result[0].unparsed) == (1, 1, 1)
    assert result[1].comparisons[-1] == {"opponent": 0, "shown": 2, "outcome": "unparsed", "answer": "d"}


def test_deqa_expected_quality_matches_a_torch_softmax() -> None:
    logits = np.random.default_rng(0).normal(0, 3, (6, 5))
    logits[0] = [50, 0, 0, 0, 0]  # all mass on 'excellent'
    quality, probs = expected_quality(logits)
    reference = torch.softmax(torch.tensor(logits), dim=-1) @ torch.tensor(
        [5.0, 4.0, 3.0, 2.0, 1.0], dtype=torch.float64
    )
    np.testing.assert_allclose(quality, reference.numpy(), rtol=1e-12)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    assert quality[0] == pytest.approx(5.0) and np.all((quality >= 1) & (quality <= 5))
    assert [word for word, _ in LEVELS] == ["excellent", "good", "fair", "poor", "bad"]


def test_pad_to_square_centres_the_image_on_the_fill_colour() -> None:
    image = np.full((2, 4, 3), 200, dtype=np.uint8)
    square = pad_to_square(image, (1, 2, 3))
    assert square.shape == (4, 4, 3)
    assert (square[1:3] == 200).all() and (square[0] == (1, 2, 3)).all() and (square[3] == (1, 2, 3)).all()


def test_served_body_sends_png_data_urls_before_the_text_at_temperature_zero() -> None:
    images = (np.zeros((30, 40, 3), np.uint8), np.full((10, 10, 3), 255, np.uint8))
    body = chat_body(JudgeQuery(images=images, text="which?", max_new_tokens=7, resize_to=(16, 16)), "judge")
    parts = body["messages"][0]["content"]
    assert [p["type"] for p in parts] == ["image_url", "image_url", "text"] and parts[2]["text"] == "which?"
    url = parts[0]["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    decoded = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert decoded.format == "PNG" and decoded.size == (16, 16)
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("judge", 0, 7)
    with pytest.raises(ValueError, match="answer_prefix"):
        chat_body(JudgeQuery(images=images, text="q", answer_prefix="The quality is"), "judge")


def test_replies_without_text_are_judge_errors_and_only_transient_errors_retry() -> None:
    import httpx
    from rewardflow_vlm.served import ServerError

    assert answer_text({"choices": [{"message": {"content": "Final Score: 3"}}]}) == "Final Score: 3"
    for reply in ({}, {"choices": []}, {"choices": [{"message": {"content": None}}]}):
        with pytest.raises(JudgeFailure, match="judge_error"):
            answer_text(reply)
    assert is_retryable(httpx.ConnectError("refused")) and is_retryable(httpx.ReadTimeout("slow"))
    assert is_retryable(ServerError(503, "busy")) and is_retryable(ServerError(429, "slow down"))
    assert not is_retryable(ServerError(400, "bad request")) and not is_retryable(ServerError(401, "key"))
