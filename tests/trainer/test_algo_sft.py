"""SFT (rewardflow_trainer.algorithms.sft): only each group's best samples train, with the flow-matching MSE."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from rewardflow_trainer.algorithms import Rollouts, UpdateContext
from rewardflow_trainer.algorithms.base import gather_clean
from rewardflow_trainer.algorithms.sft import SFT, best_samples, flow_matching_loss
from rewardflow_trainer.config import Config, TrainConfig
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import Guidance, SD3Family
from rewardflow_trainer.sampling import Trajectory, sample_trajectories

PROMPTS = ["a red cat"] * 3 + ["two green apples"] * 3
SCORES = np.array([0.1, 0.7, 0.7, 0.4, 0.9, 0.2])  # best: 1 and 2 (tied), 4


def _sft(family: SD3Family) -> SFT:
    config = Config(train=TrainConfig(algorithm="sft", lora=None, beta=0.0))
    policy = Policy(family.transformer, None, keep_reference=False)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(family.transformer, torch.optim.SGD(policy.parameters(), lr=1e-2))
    ctx = UpdateContext(family, model, policy, optimizer, accelerator, None, Guidance(1.0, False), config, 1, 1, 2)
    return SFT(ctx)


def _rollout(family: SD3Family, seed: int = 0) -> Trajectory:
    return sample_trajectories(
        family, PROMPTS, num_steps=2, guidance=Guidance(1.0, False), noise_level=0.7,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


def test_best_samples_are_the_group_maxima_with_ties() -> None:
    assert best_samples(PROMPTS, SCORES) == [1, 2, 4]
    assert best_samples(PROMPTS[:3], np.array([0.5, 0.5, 0.5])) == [0, 1, 2]  # all equal: all of them


def test_only_the_best_samples_contribute(tiny_family: SD3Family) -> None:
    """Two rollouts that differ only in the non-best samples' latents train the same weights."""
    first, second = _rollout(tiny_family, 0), _rollout(tiny_family, 0)
    losers = torch.tensor([0, 3, 5])
    second.latents[losers] = torch.randn(second.latents[losers].shape, generator=torch.Generator().manual_seed(9))
    weights = []
    for trajectory in (first, second):
        sft = _sft(SD3Family.tiny(seed=0))
        update = sft.update(Rollouts(trajectory, np.zeros(6), PROMPTS, SCORES), {"shuffle": torch.Generator()})
        assert update.trained_samples == 3 and sft.global_step == 1
        weights.append(torch.cat([p.detach().flatten() for p in sft.ctx.policy.parameters()]))
    assert not torch.equal(
        weights[0], torch.cat([p.flatten() for p in SD3Family.tiny(seed=0).transformer.parameters()])
    )
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_the_loss_is_the_flow_matching_mse(tiny_family: SD3Family) -> None:
    sft = _sft(tiny_family)
    batch = gather_clean(sft.ctx.accelerator, _rollout(tiny_family), PROMPTS).select([1, 4])
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(batch.latents.shape, generator=generator)
    sigma = torch.tensor([0.3, 0.8])
    loss = flow_matching_loss(tiny_family, tiny_family.transformer, batch, noise, sigma)
    t = sigma[:, None, None, None]
    with torch.no_grad():
        velocity = tiny_family.transformer(
            hidden_states=(1 - t) * batch.latents + t * noise,
            timestep=sigma * 1000,
            encoder_hidden_states=batch.embeds["prompt_embeds"],
            pooled_projections=batch.embeds["pooled_prompt_embeds"],
            return_dict=False,
        )[0]
    expected = float(((velocity - (noise - batch.latents)) ** 2).mean())
    assert loss.item() == pytest.approx(expected, rel=1e-6)
