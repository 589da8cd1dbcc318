"""Per-prompt advantages: the formula, its invariants (hypothesis), and the drop of zero-signal samples."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rewardflow_trainer.advantages import STD_EPS, PerPromptStatTracker, training_mask

rewards_st = st.floats(min_value=-100, max_value=100, allow_nan=False, allow_infinity=False)


@st.composite
def grouped_batches(draw: st.DrawFn) -> tuple[list[str], np.ndarray]:
    num_prompts = draw(st.integers(1, 6))
    group_size = draw(st.integers(1, 6))
    prompts = [f"prompt {i}" for i in range(num_prompts) for _ in range(group_size)]
    order = draw(st.permutations(range(len(prompts))))
    rewards = draw(st.lists(rewards_st, min_size=len(prompts), max_size=len(prompts)))
    return [prompts[i] for i in order], np.array(rewards)


def test_matches_hand_written_formula_with_global_std() -> None:
    prompts = ["a", "a", "b", "b", "a", "b"]
    rewards = np.array([1.0, 3.0, 10.0, 14.0, 2.0, 12.0])
    advantages = PerPromptStatTracker(global_std=True).update(prompts, rewards)
    std = np.sqrt(np.mean((rewards - rewards.mean()) ** 2))
    expected = np.array([1 - 2, 3 - 2, 10 - 12, 14 - 12, 2 - 2, 12 - 12]) / (std + 1e-4)
    np.testing.assert_allclose(advantages, expected, rtol=1e-12)


def test_matches_hand_written_formula_with_per_prompt_std() -> None:
    prompts = ["a", "a", "b", "b"]
    rewards = np.array([1.0, 3.0, 10.0, 14.0])
    advantages = PerPromptStatTracker(global_std=False).update(prompts, rewards)
    expected = np.array([-1 / (1 + 1e-4), 1 / (1 + 1e-4), -2 / (2 + 1e-4), 2 / (2 + 1e-4)])
    np.testing.assert_allclose(advantages, expected, rtol=1e-12)


def test_clipped_to_adv_clip_max() -> None:
    # One outlier against a global std dominated by near-equal rewards: |A| would be far above 5.
    prompts = ["a"] * 200 + ["b", "b"]
    rewards = np.array([0.0] * 200 + [0.0, 1.0])
    advantages = PerPromptStatTracker(adv_clip_max=5.0).update(prompts, rewards)
    assert advantages.max() == 5.0
    assert advantages.min() == -5.0


@settings(max_examples=200, deadline=None)
@given(grouped_batches(), st.booleans())
def test_advantages_are_bounded_and_centered_per_prompt(batch: tuple[list[str], np.ndarray], global_std: bool) -> None:
    prompts, rewards = batch
    tracker = PerPromptStatTracker(global_std=global_std, adv_clip_max=5.0)
    advantages = tracker.update(prompts, rewards)
    assert advantages.shape == rewards.shape
    assert np.all(np.abs(advantages) <= 5.0)
    for prompt in set(prompts):
        mask = np.array([p == prompt for p in prompts])
        group = advantages[mask]
        if np.all(np.abs(group) < 5.0):  # unclipped groups are centered
            scale = np.abs(rewards).max() / STD_EPS + 1
            assert abs(group.sum()) <= 1e-9 * scale * len(group)
        # The order of rewards inside a group is kept: A is increasing in r.
        order = np.argsort(rewards[mask], kind="stable")
        assert np.all(np.diff(group[order]) >= -1e-12)


@settings(max_examples=100, deadline=None)
@given(grouped_batches(), st.booleans(), st.randoms(use_true_random=False))
def test_permuting_the_batch_permutes_the_advantages(
    batch: tuple[list[str], np.ndarray], global_std: bool, rnd: object
) -> None:
    prompts, rewards = batch
    perm = np.arange(len(prompts))
    rnd.shuffle(perm)  # type: ignore[attr-defined]
    a = PerPromptStatTracker(global_std=global_std).update(prompts, rewards)
    b = PerPromptStatTracker(global_std=global_std).update([prompts[i] for i in perm], rewards[perm])
    np.testing.assert_allclose(b, a[perm], rtol=1e-9, atol=1e-9)


@settings(max_examples=100, deadline=None)
@given(grouped_batches(), st.floats(-50, 50), st.booleans())
def test_constant_groups_give_exactly_zero(batch: tuple[list[str], np.ndarray], value: float, global_std: bool) -> None:
    prompts, rewards = batch
    first = prompts[0]
    rewards = np.where(np.array([p == first for p in prompts]), value, rewards)
    advantages = PerPromptStatTracker(global_std=global_std).update(prompts, rewards)
    assert np.all(advantages[[p == first for p in prompts]] == 0.0)


@settings(max_examples=100, deadline=None)
@given(grouped_batches(), st.floats(0.5, 20), st.floats(-100, 100))
def test_affine_reward_change_keeps_the_advantages_when_std_dominates(
    batch: tuple[list[str], np.ndarray], scale: float, shift: float
) -> None:
    prompts, rewards = batch
    rewards = rewards * 1e3  # make the 1e-4 in the denominator negligible
    a = PerPromptStatTracker().update(prompts, rewards)
    b = PerPromptStatTracker().update(prompts, rewards * scale + shift)
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_clear_forgets_previous_epoch() -> None:
    tracker = PerPromptStatTracker()
    tracker.update(["a", "a"], [100.0, 200.0])
    tracker.clear()
    advantages = tracker.update(["a", "a"], [1.0, 3.0])
    np.testing.assert_allclose(advantages, [-1 / (1 + 1e-4), 1 / (1 + 1e-4)])


def test_stats_and_state_dict_round_trip() -> None:
    tracker = PerPromptStatTracker()
    tracker.update(["a", "a", "b", "b", "c", "c"], [1.0, 1.0, 0.0, 2.0, 5.0, 5.0])
    stats = tracker.stats()
    assert stats.num_groups == 3
    assert stats.mean_group_size == 2.0
    assert stats.zero_std_ratio == pytest.approx(4 / 6)
    other = PerPromptStatTracker()
    other.load_state_dict(tracker.state_dict())
    assert other.stats() == stats


def test_rejects_non_finite_rewards_naming_the_prompt() -> None:
    with pytest.raises(ValueError, match="prompt x"):
        PerPromptStatTracker().update(["prompt x", "y"], [float("nan"), 1.0])


def test_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="one reward per prompt"):
        PerPromptStatTracker().update(["a", "b"], [1.0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([0.0, 0.0, 1.0, -2.0]), min_size=1, max_size=40), st.integers(1, 8), st.integers(0, 9))
def test_training_mask_keeps_signal_and_balances_ranks(values: list[float], num_minibatches: int, seed: int) -> None:
    advantages = np.array(values)
    if num_minibatches > len(advantages):
        with pytest.raises(ValueError, match="num_minibatches"):
            training_mask(advantages, num_minibatches, np.random.default_rng(seed))
        return
    mask = training_mask(advantages, num_minibatches, np.random.default_rng(seed))
    kept, signal, zeros = int(mask.sum()), int((advantages != 0).sum()), int((advantages == 0).sum())
    assert np.all(mask[advantages != 0])
    assert kept >= num_minibatches
    if zeros >= (-signal) % num_minibatches:  # enough zero samples to fill the last minibatch
        assert kept % num_minibatches == 0
    # Padding never adds more zero-advantage samples than needed.
    assert kept - signal < num_minibatches or signal == 0
    assert kept - signal <= max(num_minibatches, (-signal) % num_minibatches)
