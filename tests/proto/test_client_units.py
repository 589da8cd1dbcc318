"""Pure parts of the reward client: reward names, chunking, weighted sums, retry policy, input checks."""

import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rewardflow_proto.client import (
    RetryPolicy,
    RewardClient,
    _request,
    parse_retry_after,
    plan_chunks,
    resolve_reward,
    service_of,
    weighted_total,
)

KEYS = {"jpeg": ("compressibility", "incompressibility", "size_kb"), "geneval": ("score", "strict")}


def test_service_name_resolves_to_primary_score_key() -> None:
    assert resolve_reward("jpeg", KEYS) == ("jpeg", "compressibility")
    assert resolve_reward("geneval", KEYS) == ("geneval", "score")


def test_service_underscore_key_resolves_to_that_key() -> None:
    assert resolve_reward("jpeg_size_kb", KEYS) == ("jpeg", "size_kb")
    assert resolve_reward("geneval_strict", KEYS) == ("geneval", "strict")


def test_longest_service_prefix_wins_when_names_overlap() -> None:
    keys = {"pick": ("a_score",), "pick_a": ("score",)}
    assert resolve_reward("pick_a_score", keys) == ("pick_a", "score")
    assert resolve_reward("pick_a", keys) == ("pick_a", "score")
    assert service_of("pick_a_x", ["pick", "pick_a"]) == "pick_a"


def test_unknown_reward_lists_every_valid_name() -> None:
    with pytest.raises(ValueError) as info:
        resolve_reward("jpeg_sharpness", KEYS)
    message = str(info.value)
    assert "'jpeg_sharpness'" in message
    for name in ("jpeg", "jpeg_compressibility", "jpeg_incompressibility", "jpeg_size_kb", "geneval_strict"):
        assert name in message


def test_client_rejects_reward_of_unconfigured_service_at_construction() -> None:
    with pytest.raises(ValueError, match=r"'ocr'.*jpeg"):
        RewardClient({"jpeg": ["http://127.0.0.1:1"]}, weights={"ocr": 1.0})


def test_client_without_weights_uses_each_service_primary_score_once() -> None:
    client = RewardClient({"jpeg": "http://127.0.0.1:1/", "geneval": ["http://127.0.0.1:2"]})
    assert client.weights == {"jpeg": 1.0, "geneval": 1.0}
    assert client.endpoints["jpeg"] == ["http://127.0.0.1:1"]


def test_chunks_respect_max_items() -> None:
    assert plan_chunks([1] * 10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert plan_chunks([1] * 4, 4) == [(0, 4)]
    assert plan_chunks([], 4) == []


def test_chunks_respect_max_bytes_but_keep_at_least_one_item() -> None:
    assert plan_chunks([40, 40, 40, 100, 10], 10, max_bytes=100) == [(0, 2), (2, 3), (3, 4), (4, 5)]


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=1000), max_size=60),
    max_items=st.integers(min_value=1, max_value=17),
    max_bytes=st.one_of(st.none(), st.integers(min_value=1, max_value=3000)),
)
def test_chunks_cover_every_item_once_in_order_within_limits(
    sizes: list[int], max_items: int, max_bytes: int | None
) -> None:
    chunks = plan_chunks(sizes, max_items, max_bytes)
    covered = [i for a, b in chunks for i in range(a, b)]
    assert covered == list(range(len(sizes)))
    for a, b in chunks:
        assert 1 <= b - a <= max_items
        if max_bytes is not None and b - a > 1:
            assert sum(sizes[a:b]) <= max_bytes


def test_chunks_end_at_group_boundaries_when_groups_are_given() -> None:
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert plan_chunks([1] * 9, 4, groups=groups) == [(0, 3), (3, 6), (6, 9)]
    assert plan_chunks([1] * 9, 2, groups=groups) == [(0, 2), (2, 3), (3, 5), (5, 6), (6, 8), (8, 9)]  # too big


@given(
    group_sizes=st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=12),
    extra=st.integers(min_value=0, max_value=10),
)
def test_groups_that_fit_are_never_split(group_sizes: list[int], extra: int) -> None:
    groups = [g for g, size in enumerate(group_sizes) for _ in range(size)]
    max_items = max(group_sizes) + extra
    chunks = plan_chunks([1] * len(groups), max_items, groups=groups)
    assert [i for a, b in chunks for i in range(a, b)] == list(range(len(groups)))
    for a, b in chunks:
        assert b - a <= max_items
        assert a == 0 or groups[a] != groups[a - 1]  # every chunk starts a new group


def test_weighted_total_matches_hand_sum() -> None:
    components = {"a": np.array([1.0, 2.0, -3.0]), "b": np.array([10.0, 0.5, 4.0])}
    total = weighted_total(components, {"a": 0.5, "b": -2.0}, 3)
    np.testing.assert_allclose(total, [0.5 - 20.0, 1.0 - 1.0, -1.5 - 8.0])


def test_weighted_total_is_nan_only_where_a_weighted_component_failed() -> None:
    components = {"a": np.array([1.0, np.nan, 3.0]), "b": np.array([np.nan, 1.0, 1.0])}
    total = weighted_total(components, {"a": 1.0, "b": 0.0}, 3)
    assert total[0] == 1.0  # b failed but carries no weight
    assert np.isnan(total[1])
    assert total[2] == 3.0


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=1.0)
    rng = random.Random(0)
    for retry, bound in [(0, 0.1), (1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (10, 1.0)]:
        samples = [policy.backoff_s(retry, rng) for _ in range(300)]
        assert all(0.0 <= s <= bound for s in samples)
        assert max(samples) > 0.8 * bound  # full jitter spreads over the whole range
        assert min(samples) < 0.2 * bound


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == pytest.approx(10.0)


def test_request_repeats_a_single_prompt_and_checks_counts() -> None:
    images = np.zeros((3, 8, 8, 3), np.uint8)
    assert _request(images, "a cat", None, None).prompts == ["a cat"] * 3
    with pytest.raises(ValueError, match="prompts: has 2 entries for 3 images"):
        _request(images, ["a", "b"], None, None)
    with pytest.raises(ValueError, match="group_ids: has 1 entries"):
        _request(images, "x", None, [0])
    with pytest.raises(ValueError, match="uint8"):
        _request(images.astype(np.float32), "x", None, None)
    with pytest.raises(ValueError, match="empty"):
        _request([], [], None, None)
