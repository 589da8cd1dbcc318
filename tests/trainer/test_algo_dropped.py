"""Dropped samples (a NaN reward under reward.on_invalid_score = drop) in every algorithm: never a DPO winner or
loser, never an SFT best sample, never in the per-reward or NFT statistics; the results equal the computation
without them, and a group left with fewer than 2 finite samples contributes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from rewardflow_trainer.advantages import PerPromptStatTracker, per_reward_advantages
from rewardflow_trainer.algorithms import Rollouts, UpdateContext
from rewardflow_trainer.algorithms.dpo import preference_pairs
from rewardflow_trainer.algorithms.nft import NFT, nft_loss
from rewardflow_trainer.algorithms.sft import best_samples
from rewardflow_trainer.config import Config, TrainConfig
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import Guidance, SD3Family
from rewardflow_trainer.rewards import finite_advantages
from rewardflow_trainer.sampling import sample_trajectories

NAN = np.nan
# Three groups of four; the NaNs sit where argmax/argmin would pick them, one group keeps a single finite sample.
PROMPTS = ["a cat"] * 4 + ["a dog"] * 4 + ["a cow"] * 4
SCORES = np.array([NAN, 0.2, 0.9, 0.4, 0.5, NAN, 0.1, 0.8, 0.3, NAN, NAN, NAN])
FINITE = np.flatnonzero(np.isfinite(SCORES))


def without_nan(choose: Callable[[list[str], np.ndarray], Any], prompts: list[str], scores: np.ndarray) -> Any:
    """`choose` on the finite samples only (its indices are positions in FINITE)."""
    return choose([prompts[i] for i in FINITE], scores[FINITE])


def test_dpo_pairs_never_pick_a_dropped_sample() -> None:
    pairs = preference_pairs(PROMPTS, SCORES)
    assert pairs == [(2, 1), (7, 6)]  # "a cow" has one finite sample left: no pair
    expected = without_nan(preference_pairs, PROMPTS, SCORES)
    assert pairs == [(int(FINITE[w]), int(FINITE[loser])) for w, loser in expected]
    assert all(np.isfinite(SCORES[[w, loser]]).all() for w, loser in pairs)


def test_sft_best_samples_never_pick_a_dropped_sample() -> None:
    best = best_samples(PROMPTS, SCORES)
    assert best == [2, 7]
    expected = without_nan(best_samples, PROMPTS, SCORES)
    assert best == [int(FINITE[i]) for i in expected]  # "a cow" keeps a lone sample: nothing
    ties = np.array([0.5, NAN, 0.5, 0.5])
    assert best_samples(PROMPTS[:4], ties) == [0, 2, 3]  # all finite ones equal: all of them, the NaN not


@pytest.mark.parametrize("global_std", [True, False])
def test_per_reward_advantages_leave_dropped_samples_out_of_every_statistic(global_std: bool) -> None:
    rng = np.random.default_rng(0)
    components = {"a": rng.normal(size=12), "b": 100 * rng.normal(size=12), "unweighted": rng.normal(size=12)}
    components["a"][[0, 9, 10]] = NAN
    components["b"][[5, 11]] = NAN
    components["unweighted"][[1, 2]] = NAN  # weight 0: its NaNs drop nothing
    weights = {"a": 1.0, "b": 0.5, "unweighted": 0.0}
    advantages = per_reward_advantages(PROMPTS, components, weights, global_std)
    assert np.flatnonzero(np.isnan(advantages)).tolist() == [0, 5, 9, 10, 11]
    kept = np.isfinite(advantages)
    alone = per_reward_advantages(
        [p for p, k in zip(PROMPTS, kept, strict=True) if k], {k: v[kept] for k, v in components.items()}, weights,
        global_std,
    )  # fmt: skip
    np.testing.assert_array_equal(advantages[kept], alone)
    assert advantages[8] == 0  # "a cow" keeps one sample: no signal from a group of one
    assert np.all(advantages[kept][:-1] != 0)


def test_weighted_advantages_leave_dropped_samples_out_of_the_statistics() -> None:
    tracker = PerPromptStatTracker()
    advantages = finite_advantages(tracker.update, PROMPTS, SCORES)
    alone = PerPromptStatTracker().update([PROMPTS[i] for i in FINITE], SCORES[FINITE])
    np.testing.assert_array_equal(advantages[FINITE], alone)
    assert np.all(advantages[~np.isfinite(SCORES)] == 0) and advantages[8] == 0


def test_nft_loss_averages_over_the_kept_samples_only() -> None:
    generator = torch.Generator().manual_seed(0)
    x0, noise, v_theta, v_old = (torch.randn(5, 4, 8, 8, generator=generator) for _ in range(4))
    sigma, r = torch.tensor([0.2, 0.5, 0.9, 0.4, 0.7]), torch.tensor([1.0, 0.5, 0.25, 0.0, 0.5])
    kept = torch.tensor([True, False, True, True, False])
    v_theta[~kept] = 1e6  # whatever a dropped sample holds, it must not count
    t = sigma[:, None, None, None]
    x_t = (1 - t) * x0 + t * noise
    loss = nft_loss(v_theta, v_old, x_t, x0, sigma, r, 0.5, 5.0, kept)
    alone = nft_loss(v_theta[kept], v_old[kept], x_t[kept], x0[kept], sigma[kept], r[kept], 0.5, 5.0)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(alone.item(), rel=1e-6)
    none = nft_loss(v_theta, v_old, x_t, x0, sigma, r, 0.5, 5.0, torch.zeros(5, dtype=torch.bool))
    assert none.item() == 0.0


def _nft(family: SD3Family) -> NFT:
    config = Config(train=TrainConfig(algorithm="nft", lora=None, beta=0.0))
    policy = Policy(family.transformer, None, keep_reference=False)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(family.transformer, torch.optim.SGD(policy.parameters(), lr=1e-2))
    ctx = UpdateContext(family, model, policy, optimizer, accelerator, None, Guidance(1.0, False), config, 1, 1, 2)
    return NFT(ctx)


def test_nft_update_is_blind_to_dropped_samples() -> None:
    """Two rollouts that differ only in the dropped samples' latents train the same weights, with finite losses."""
    prompts = PROMPTS[:8]
    scores = SCORES[:8]
    advantages = finite_advantages(PerPromptStatTracker().update, prompts, scores)
    rollouts = [
        sample_trajectories(
            SD3Family.tiny(seed=0), prompts, num_steps=2, guidance=Guidance(1.0, False), noise_level=0.0,
            generator=torch.Generator().manual_seed(0),
        )
        for _ in range(2)
    ]  # fmt: skip
    dropped = torch.tensor([0, 5])
    rollouts[1].latents[dropped] = 50 * torch.randn(rollouts[1].latents[dropped].shape)
    weights = []
    for trajectory in rollouts:
        nft = _nft(SD3Family.tiny(seed=0))
        update = nft.update(Rollouts(trajectory, advantages, prompts, scores), {"shuffle": torch.Generator()})
        assert update.trained_samples == 6
        assert all(np.isfinite(v).all() for v in update.figures.values()) and update.figures["loss"]
        weights.append(torch.cat([p.detach().flatten() for p in nft.ctx.policy.parameters()]))
    initial = torch.cat([p.flatten() for p in SD3Family.tiny(seed=0).transformer.parameters()])
    assert not torch.equal(weights[0], initial)
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)
