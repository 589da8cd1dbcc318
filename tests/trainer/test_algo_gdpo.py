"""Multi-reward aggregation (rewardflow_trainer.advantages.per_reward_advantages): normalizing each reward in its
group before the weighted sum gives rewards of very different scales equal influence; the weighted sum does not."""

from __future__ import annotations

import numpy as np
from rewardflow_trainer.advantages import STD_EPS, PerPromptStatTracker, per_reward_advantages

GROUPS, GROUP_SIZE = 6, 8


def _constructed() -> tuple[list[str], dict[str, np.ndarray]]:
    """Reward `wide` has 100x the spread of `narrow`; narrow is wide/100 shuffled within each group, so both
    normalize to the same spread but rank the samples differently."""
    rng = np.random.default_rng(0)
    prompts = [f"prompt {g}" for g in range(GROUPS) for _ in range(GROUP_SIZE)]
    wide = rng.normal(0.0, 100.0, GROUPS * GROUP_SIZE)
    narrow = np.concatenate(
        [rng.permutation(wide[g * GROUP_SIZE : (g + 1) * GROUP_SIZE]) / 100.0 for g in range(GROUPS)]
    )
    return prompts, {"wide": wide, "narrow": narrow}


def _influence(advantages: np.ndarray, normalized: np.ndarray) -> float:
    return abs(float(np.corrcoef(advantages, normalized)[0, 1]))


def test_per_reward_aggregation_gives_both_rewards_equal_influence() -> None:
    prompts, rewards = _constructed()
    weights = {"wide": 1.0, "narrow": 1.0}
    normalized = {k: PerPromptStatTracker(adv_clip_max=np.inf).update(prompts, v) for k, v in rewards.items()}
    np.testing.assert_allclose(normalized["wide"].std(), normalized["narrow"].std(), rtol=1e-3)

    per_reward = per_reward_advantages(prompts, rewards, weights)
    total = normalized["wide"] + normalized["narrow"]
    np.testing.assert_allclose(per_reward, total / (total.std() + STD_EPS), rtol=1e-12)
    influence = {k: _influence(per_reward, normalized[k]) for k in rewards}
    assert abs(influence["wide"] - influence["narrow"]) < 0.01, influence
    assert min(influence.values()) > 0.5

    weighted_sum = rewards["wide"] * weights["wide"] + rewards["narrow"] * weights["narrow"]
    summed = PerPromptStatTracker(adv_clip_max=np.inf).update(prompts, weighted_sum)
    influence = {k: _influence(summed, normalized[k]) for k in rewards}
    assert influence["wide"] > 0.999 and influence["narrow"] < 0.5, influence


def test_weights_still_scale_each_normalized_reward() -> None:
    prompts, rewards = _constructed()
    normalized = {k: PerPromptStatTracker(adv_clip_max=np.inf).update(prompts, v) for k, v in rewards.items()}
    advantages = per_reward_advantages(prompts, rewards, {"wide": 3.0, "narrow": 1.0})
    total = 3 * normalized["wide"] + normalized["narrow"]
    np.testing.assert_allclose(advantages, total / (total.std() + STD_EPS), rtol=1e-12)
    assert _influence(advantages, normalized["wide"]) > 2 * _influence(advantages, normalized["narrow"])
