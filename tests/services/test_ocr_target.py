"""The OCR reward's text rules: which text is the target, normalization, and the edit-distance score."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from ocr_renders import expected_accuracy, levenshtein
from rewardflow_ocr.target import MissingTarget, match, normalize, quoted_text, target_text


@pytest.mark.parametrize(
    ("prompt", "quoted"),
    [
        ('a sign that says "Open Late"', "Open Late"),
        ('"first" then "second"', "first"),
        ("a mug with \u201cHot Tea\u201d on it", "Hot Tea"),
        ('mixed \u201ccurly\u201d before "straight"', "curly"),
        ('mixed "straight" before \u201ccurly\u201d', "straight"),
        ('an unclosed "quote', None),
        ("no quotes at all", None),
        ('empty "" quotes', ""),
    ],
)
def test_quoted_text_is_the_first_complete_pair(prompt: str, quoted: str | None) -> None:
    assert quoted_text(prompt) == quoted


def test_normalize_removes_every_kind_of_whitespace_and_lower_cases() -> None:
    assert normalize(" Hello\tWide\nWORLD\u00a0! ") == "hellowideworld!"


def test_prompt_quote_wins_over_metadata() -> None:
    assert target_text('say "Big Sale"', {"target_text": "other"}) == "bigsale"


def test_metadata_is_used_when_the_prompt_has_no_usable_quote() -> None:
    assert target_text("a shop front", {"target_text": "Corner Shop"}) == "cornershop"
    assert target_text('blank "  " quotes', {"target_text": "Fallback"}) == "fallback"


@pytest.mark.parametrize(
    ("prompt", "metadata", "needle"),
    [
        ("a shop front", {}, "no text in double quotes"),
        ('empty " " quotes', {}, "empty quoted text"),
        ("a shop front", {"target_text": "   "}, "an empty metadata target_text"),
        ("a shop front", {"target_text": 42}, "int 42, expected a string"),
    ],
)
def test_missing_target_says_why(prompt: str, metadata: dict, needle: str) -> None:
    with pytest.raises(MissingTarget, match=needle):
        target_text(prompt, metadata)


def test_contained_target_scores_one_with_distance_zero() -> None:
    found = match("welcometohelloworldcafe", "helloworld")
    assert (found.score, found.distance) == (1.0, 0)


def test_score_is_one_minus_capped_distance_over_length() -> None:
    assert match("helowrld", "helloworld").score == pytest.approx(0.8)
    far = match("xxxxxxxxxxxxxxxxxxxxxxxxx", "abc")
    assert (far.score, far.distance) == (0.0, 25), "the score caps the distance at len(target); details keep it"
    assert match("", "abc").score == 0.0


@given(st.text(alphabet="abcdeXY 1", max_size=12), st.text(alphabet="abcdeXY 1", min_size=1, max_size=8))
def test_score_matches_an_independent_dynamic_programme(recognized: str, target: str) -> None:
    assume(normalize(target))
    found = match(normalize(recognized), normalize(target))
    assert found.score == pytest.approx(expected_accuracy(recognized, target), abs=1e-12)
    if normalize(target) not in normalize(recognized):
        assert found.distance == levenshtein(normalize(recognized), normalize(target))
    assert 0.0 <= found.score <= 1.0


# The expression the OCR reward used before issue 17: right on every prompt, but quadratic on unclosed quotes.
_OLD_QUOTED = re.compile(r'"([^"]*)"|\u201c([^\u201d]*)\u201d')


def _old_quoted_text(prompt: str) -> str | None:
    found = _OLD_QUOTED.search(prompt)
    return None if found is None else found.group(1) if found.group(1) is not None else found.group(2)


@given(st.text(alphabet='ab "\u201c\u201d', max_size=40))
def test_quoted_text_agrees_with_the_pairing_rule_of_the_old_expression(prompt: str) -> None:
    assert quoted_text(prompt) == _old_quoted_text(prompt)


@pytest.mark.parametrize("prompt", ["\u201c" * 20_000, '"' + "\u201c" * 20_000, "\u201c\u201d" * 10_000 + '"'])
def test_quoted_text_is_linear_on_unclosed_quotes(prompt: str) -> None:
    # The old expression took ~2.6 s on 20,000 unclosed opening quotes (quadratic); linear is well under 50 ms.
    started = time.perf_counter()
    quoted_text(prompt)
    assert time.perf_counter() - started < 0.05
