"""DiffusionNFT (rewardflow_trainer.algorithms.nft): the loss against the paper's velocity-space formula on fixed
tensors, and the optimality probability."""

from __future__ import annotations

import pytest
import torch
from rewardflow_trainer.algorithms.nft import nft_loss, optimality


def test_optimality_maps_clipped_advantages_to_zero_one() -> None:
    r = optimality(torch.tensor([-9.0, -5.0, 0.0, 2.5, 5.0, 7.0]), adv_clip_max=5.0)
    torch.testing.assert_close(r, torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))


@pytest.mark.parametrize("beta", [1.0, 0.1])
def test_loss_matches_the_papers_formula_in_velocity_space(beta: float) -> None:
    """Paper: r·‖v⁺ - v‖² + (1 - r)·‖v⁻ - v‖², v± the implicit policies; each term written on x̂0 = x_t - t·v
    is t²·‖v± - v‖² and is divided by its stop-gradient scale mean|x̂0± - x0| = t·mean|v± - v|."""
    generator = torch.Generator().manual_seed(0)
    x0, noise, v_theta, v_old = (torch.randn(3, 4, 8, 8, generator=generator) for _ in range(4))
    sigma, r, clip = torch.tensor([0.2, 0.5, 0.9]), torch.tensor([1.0, 0.25, 0.0]), 5.0
    t = sigma[:, None, None, None]
    x_t = (1 - t) * x0 + t * noise
    loss = nft_loss(v_theta, v_old, x_t, x0, sigma, r, beta, clip)

    v = noise - x0
    expected = []
    for b in range(3):
        positive = (1 - beta) * v_old[b] + beta * v_theta[b]
        negative = (1 + beta) * v_old[b] - beta * v_theta[b]
        terms = [
            sigma[b] ** 2 * ((w - v[b]) ** 2).mean() / (sigma[b] * (w - v[b]).abs().mean())
            for w in (positive, negative)
        ]
        expected.append((r[b] * terms[0] + (1 - r[b]) * terms[1]) / beta)
    assert loss.item() == pytest.approx(clip * float(torch.stack(expected).mean()), rel=1e-5)


def test_a_positive_sample_pulls_the_velocity_toward_its_target() -> None:
    """r = 1: the gradient step moves v_θ toward v (its positive policy v⁺ fits the sample)."""
    generator = torch.Generator().manual_seed(1)
    x0, noise, v_old = (torch.randn(1, 4, 8, 8, generator=generator) for _ in range(3))
    sigma = torch.tensor([0.6])
    x_t = (1 - sigma) * x0 + sigma * noise
    v_theta = v_old.clone().requires_grad_(True)
    nft_loss(v_theta, v_old, x_t, x0, sigma, torch.tensor([1.0]), 1.0, 5.0).backward()
    moved = v_theta.detach() - 1e-2 * v_theta.grad
    target = noise - x0
    assert ((moved - target) ** 2).mean() < ((v_theta.detach() - target) ** 2).mean()
    v_theta.grad = None
    nft_loss(v_theta, v_old, x_t, x0, sigma, torch.tensor([0.0]), 1.0, 5.0).backward()
    moved = v_theta.detach() - 1e-2 * v_theta.grad  # r = 0: away from the sample
    assert ((moved - target) ** 2).mean() > ((v_theta.detach() - target) ** 2).mean()
