"""Per-prompt reward normalization (GRPO advantages) and the drop of samples that carry no signal."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

STD_EPS = 1e-4
"""Added to the std before dividing, as in the reference (it also bounds A when all rewards are equal)."""


@dataclass(frozen=True)
class AdvantageStats:
    """What one normalization saw: group count and sizes, and the share of zero advantages."""

    num_groups: int
    mean_group_size: float
    zero_std_ratio: float
    """Share of samples whose advantage is exactly 0 (their prompt's rewards were all equal)."""
    global_std: float


class PerPromptStatTracker:
    """Groups rewards by prompt text and normalizes each by its prompt's mean.

    `A = clip((r - mean_prompt) / (std + 1e-4), -adv_clip_max, adv_clip_max)`, std global over every
    reward given to `update` since the last `clear` (the default) or per prompt (`global_std=False`).
    Give it the rewards of every rank at once (after a gather): the groups span ranks. Clear it
    every epoch.
    """

    def __init__(self, global_std: bool = True, adv_clip_max: float = 5.0) -> None:
        if adv_clip_max <= 0:
            raise ValueError(f"adv_clip_max={adv_clip_max!r}: expected a positive number")
        self.global_std = global_std
        self.adv_clip_max = float(adv_clip_max)
        self._rewards: dict[str, list[float]] = {}

    def update(self, prompts: Sequence[str], rewards: np.ndarray | Sequence[float]) -> np.ndarray:
        """Add one batch of rewards and return their advantages, (N,) float64."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if rewards.ndim != 1 or len(rewards) != len(prompts):
            raise ValueError(
                f"rewards of shape {rewards.shape} for {len(prompts)} prompts: expected one reward per prompt"
            )
        if not np.all(np.isfinite(rewards)):
            bad = [str(p) for p, r in zip(prompts, rewards, strict=True) if not np.isfinite(r)][:3]
            raise ValueError(f"non-finite reward for prompt(s) {bad}: every sample needs a finite reward")
        for prompt, reward in zip(prompts, rewards, strict=True):
            self._rewards.setdefault(str(prompt), []).append(float(reward))
        all_rewards = np.concatenate([np.asarray(v) for v in self._rewards.values()])
        global_std = float(np.std(all_rewards))
        advantages = np.zeros_like(rewards)
        for prompt in set(map(str, prompts)):
            seen = np.asarray(self._rewards[prompt])
            std = global_std if self.global_std else float(np.std(seen))
            mask = np.fromiter((str(p) == prompt for p in prompts), dtype=bool, count=len(prompts))
            centered = rewards[mask] - np.mean(seen)
            # Equal rewards must give exactly 0 (np.mean may round a constant group off by one ulp).
            if np.all(seen == seen[0]):
                centered = np.zeros_like(centered)
            advantages[mask] = centered / (std + STD_EPS)
        return np.clip(advantages, -self.adv_clip_max, self.adv_clip_max)

    def stats(self) -> AdvantageStats:
        """Group statistics over everything given to `update` since the last `clear`."""
        if not self._rewards:
            return AdvantageStats(num_groups=0, mean_group_size=0.0, zero_std_ratio=0.0, global_std=0.0)
        sizes = [len(v) for v in self._rewards.values()]
        zero = sum(len(v) for v in self._rewards.values() if all(r == v[0] for r in v))
        all_rewards = np.concatenate([np.asarray(v) for v in self._rewards.values()])
        return AdvantageStats(
            num_groups=len(sizes),
            mean_group_size=float(np.mean(sizes)),
            zero_std_ratio=zero / sum(sizes),
            global_std=float(np.std(all_rewards)),
        )

    def clear(self) -> None:
        """Forget every reward (called once per epoch)."""
        self._rewards.clear()

    def state_dict(self) -> dict[str, list[float]]:
        """The rewards seen since the last clear, for checkpoints."""
        return {k: list(v) for k, v in self._rewards.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Restore what `state_dict` returned."""
        self._rewards = {str(k): [float(r) for r in v] for k, v in state.items()}


def training_mask(advantages: np.ndarray, num_minibatches: int, rng: np.random.Generator) -> np.ndarray:
    """Which local samples to train on: those with a non-zero advantage, (N,) bool.

    The count kept is at least `num_minibatches` and is padded up (with random zero-advantage
    samples, where there are enough) to a multiple of it, so that every rank runs the same number of
    minibatches of near-equal size whatever it dropped (a rank that skips a backward hangs the others).
    """
    advantages = np.asarray(advantages)
    if num_minibatches < 1 or num_minibatches > len(advantages):
        raise ValueError(
            f"num_minibatches={num_minibatches} for {len(advantages)} local samples: expected 1..{len(advantages)}"
        )
    mask = advantages != 0
    shortfall = (-int(mask.sum())) % num_minibatches
    if mask.sum() == 0:
        shortfall = num_minibatches
    zero_idx = np.flatnonzero(~mask)
    if 0 < shortfall <= len(zero_idx):
        mask[rng.choice(zero_idx, size=shortfall, replace=False)] = True
    return mask


def per_reward_advantages(
    prompts: Sequence[str],
    components: dict[str, np.ndarray],
    weights: dict[str, float],
    global_std: bool = True,
) -> np.ndarray:
    """GDPO-style aggregation (`train.advantages = "per_reward"`), unclipped, (N,) float64.

    Each reward k is normalized within its prompt's group on its own, `Â_k = (r_k - mean_p(r_k)) /
    (std(r_k) + 1e-4)` (std global over the epoch or per prompt, as for the weighted sum), then
    `A = Σ_k w_k·Â_k`, divided by its own std over the epoch (+ 1e-4) so its scale matches a single
    normalized reward. A reward with 100x the spread of another thus weighs as much as the other,
    where normalizing the weighted sum lets the wide one decide (docs/algorithm.md, "Advantages").

    A sample where a weighted reward is not finite (dropped: reward.on_invalid_score = drop) gets NaN and enters
    no mean or std: the others' advantages are those computed without it.
    """
    for name in weights:
        if name not in components:
            raise KeyError(f"reward.weights.{name}: no scores of that reward in the epoch; have {sorted(components)}")
    weighted = {name: np.asarray(components[name], dtype=np.float64) for name, w in weights.items() if w != 0}
    keep = np.ones(len(prompts), dtype=bool)
    for values in weighted.values():
        keep &= np.isfinite(values)
    result = np.full(len(prompts), np.nan)
    if not keep.any():
        return result
    kept_prompts = [p for p, k in zip(prompts, keep, strict=True) if k]
    total = np.zeros(len(kept_prompts), dtype=np.float64)
    for name, values in weighted.items():
        tracker = PerPromptStatTracker(global_std=global_std, adv_clip_max=np.inf)
        total += weights[name] * tracker.update(kept_prompts, values[keep])
    result[keep] = total if np.all(total == 0) else total / (float(np.std(total)) + STD_EPS)
    return result
