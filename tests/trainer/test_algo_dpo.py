"""Diffusion-DPO (rewardflow_trainer.algorithms.dpo) on the tiny random SD3: the loss against an independent
computation, the direction of one gradient step, and the beta -> 0 and equal-pair limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from rewardflow_trainer.algorithms import Rollouts, UpdateContext
from rewardflow_trainer.algorithms.base import CleanBatch, gather_clean
from rewardflow_trainer.algorithms.dpo import DPO, dpo_loss, preference_pairs
from rewardflow_trainer.config import Config, DpoConfig, TrainConfig
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import Guidance, SD3Family
from rewardflow_trainer.sampling import Trajectory, sample_trajectories

PROMPTS = ["a red cat", "a red cat", "a blue dog on a bench", "a blue dog on a bench"]
SCORES = np.array([0.2, 0.9, 0.5, 0.1])  # pairs: (1, 0) and (2, 3)


def _dpo(family: SD3Family, beta: float = 100.0, lr: float = 1e-3, terms: int = 1) -> DPO:
    config = Config(train=TrainConfig(algorithm="dpo", lora=None, beta=0.0, dpo=DpoConfig(beta=beta)))
    policy = Policy(family.transformer, None, keep_reference=True)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(family.transformer, torch.optim.SGD(policy.parameters(), lr=lr))
    ctx = UpdateContext(family, model, policy, optimizer, accelerator, None, Guidance(1.0, False), config, 1, 1, terms)
    return DPO(ctx)


def _rollout(family: SD3Family) -> Trajectory:
    return sample_trajectories(
        family, PROMPTS, num_steps=2, guidance=Guidance(1.0, False), noise_level=0.7,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip


def _perturb(policy: Policy, seed: int = 1, scale: float = 0.05) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in policy.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * scale)


def _velocity(transformer: torch.nn.Module, x_t: torch.Tensor, sigma: torch.Tensor, batch: CleanBatch) -> torch.Tensor:
    """The conditional velocity straight from the diffusers transformer (not through the family)."""
    return transformer(
        hidden_states=x_t,
        timestep=sigma * 1000,
        encoder_hidden_states=batch.embeds["prompt_embeds"],
        pooled_projections=batch.embeds["pooled_prompt_embeds"],
        return_dict=False,
    )[0]


def test_pairs_are_best_and_worst_of_each_group_and_equal_groups_give_none() -> None:
    assert preference_pairs(PROMPTS, SCORES) == [(1, 0), (2, 3)]
    assert preference_pairs(PROMPTS, np.array([0.3, 0.3, 0.5, 0.1])) == [(2, 3)]


def test_loss_of_a_constructed_pair_matches_an_independent_computation(tiny_family: SD3Family) -> None:
    dpo = _dpo(tiny_family)
    _perturb(dpo.ctx.policy)  # the policy now differs from its frozen reference
    clean = gather_clean(dpo.ctx.accelerator, _rollout(tiny_family), PROMPTS)
    winner, loser = clean.select([1]), clean.select([0])
    info: dict[str, list[float]] = {}
    loss = dpo._term(winner, loser, torch.Generator().manual_seed(7), info)

    generator = torch.Generator().manual_seed(7)  # the same draws, in the same order: noise, then t
    noise = torch.randn(winner.latents.shape, generator=generator)
    u = torch.sigmoid(torch.randn(1, generator=generator))
    t = 3 * u / (1 + 2 * u)  # the tiny scheduler's shift 3
    errors = {}
    for name, sample in (("w", winner), ("l", loser)):
        x_t = (1 - t) * sample.latents + t * noise
        target = noise - sample.latents
        with torch.no_grad():
            with dpo.ctx.policy.reference() as reference:
                ref = _velocity(reference, x_t, t, sample)
            pol = _velocity(dpo.ctx.policy.transformer, x_t, t, sample)
        errors[name] = (float(((pol - target) ** 2).mean()), float(((ref - target) ** 2).mean()))
    inside = -0.5 * 100.0 * ((errors["w"][0] - errors["w"][1]) - (errors["l"][0] - errors["l"][1]))
    expected = -math.log(1 / (1 + math.exp(-inside)))
    assert abs(inside) > 1e-3  # the pair is not trivially balanced
    assert loss.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert info["implicit_acc"] == [float(inside > 0)]


def test_one_step_raises_the_winners_likelihood_relative_to_the_losers(tiny_family: SD3Family) -> None:
    """Likelihood in the flow-matching sense: a lower velocity error over many fixed (noise, t) draws."""
    dpo = _dpo(tiny_family, lr=1e-3, terms=16)  # one optimizer step over 16 (noise, t) draws
    trajectory = _rollout(tiny_family)
    clean = gather_clean(dpo.ctx.accelerator, trajectory, PROMPTS)
    winners, losers = clean.select([1, 2]), clean.select([0, 3])
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(64, *winners.latents.shape, generator=generator)
    sigma = torch.rand(64, generator=generator) * 0.9 + 0.05

    def margin() -> float:
        """Mean over draws of e_ref - e_policy for the winners minus the same for the losers."""
        total = 0.0
        for k in range(64):
            t = sigma[k].expand(2)
            for sign, batch in ((1, winners), (-1, losers)):
                x_t = (1 - t[:, None, None, None]) * batch.latents + t[:, None, None, None] * noise[k]
                target = noise[k] - batch.latents
                with torch.no_grad():
                    with dpo.ctx.policy.reference() as reference:
                        ref = ((_velocity(reference, x_t, t, batch) - target) ** 2).mean()
                    pol = ((_velocity(dpo.ctx.policy.transformer, x_t, t, batch) - target) ** 2).mean()
                total += sign * float(ref - pol)
        return total / 64

    assert margin() == 0.0  # the policy starts as the reference
    rollouts = Rollouts(trajectory, np.zeros(4), PROMPTS, SCORES)
    update = dpo.update(rollouts, {"shuffle": torch.Generator().manual_seed(0)})
    assert update.trained_samples == 4 and dpo.global_step == 1
    assert margin() > 0


def test_beta_to_zero_gives_log_two_and_no_gradient() -> None:
    errors = torch.tensor([0.9, 0.2, 1.3, 0.4], requires_grad=True)
    loss, inside = dpo_loss(errors[0:1], errors[1:2], errors[2:3], errors[3:4], beta=1e-9)
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2), abs=1e-8)
    assert errors.grad.abs().max().item() < 1e-9
    # and for a finite beta the formula: -log sigmoid(-beta/2 ((0.9 - 1.3) - (0.2 - 0.4)))
    loss, inside = dpo_loss(errors[0:1], errors[1:2], errors[2:3], errors[3:4], beta=10.0)
    assert inside.item() == pytest.approx(1.0, abs=1e-6)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)), abs=1e-6)


def test_an_equal_pair_gives_log_two_and_no_gradient(tiny_family: SD3Family) -> None:
    """Zero up to float32 rounding: compared with the gradient of a distinct pair under the same draws."""
    dpo = _dpo(tiny_family)
    _perturb(dpo.ctx.policy)
    clean = gather_clean(dpo.ctx.accelerator, _rollout(tiny_family), PROMPTS)
    norms = []
    for winner, loser in ((clean.select([1]), clean.select([1])), (clean.select([1]), clean.select([0]))):
        dpo.ctx.optimizer.zero_grad(set_to_none=True)
        loss = dpo._term(winner, loser, torch.Generator().manual_seed(5), {})
        loss.backward()
        norms.append(torch.cat([p.grad.flatten() for p in dpo.ctx.policy.parameters() if p.grad is not None]).norm())
        if len(norms) == 1:
            assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert norms[1] > 1e-3
    assert norms[0] < 1e-5 * norms[1]
