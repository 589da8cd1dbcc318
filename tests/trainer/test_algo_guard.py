"""GRPO-Guard (rewardflow_trainer.grpo.guard_ratio): the normalized per-step ratio on constructed Flow-SDE steps
has log-mean 0 at every step, where the plain ratio is shifted by -mean((μ_θ - μ_old)²)/(2 std²)."""

from __future__ import annotations

import pytest
import torch
from rewardflow_trainer.grpo import guard_ratio, importance_ratio
from rewardflow_trainer.sde import gaussian_log_prob

DRAWS, DIMS = 4096, 64


@pytest.mark.parametrize("std", [0.7, 0.2, 0.01], ids=["early", "mid", "late"])
def test_normalized_ratio_has_log_mean_zero_at_every_step(std: float) -> None:
    generator = torch.Generator().manual_seed(0)
    mean_old = torch.randn(1, DIMS, generator=generator).expand(DRAWS, DIMS)
    shift = 0.5 * std * torch.randn(1, DIMS, generator=generator)  # the policy moved by a fraction of the std
    mean_theta = mean_old + shift
    z = torch.randn(DRAWS, DIMS, generator=generator)
    x_next = mean_old + std * z
    stds = torch.full((DRAWS,), std)
    log_theta = gaussian_log_prob(x_next, mean_theta, stds)
    log_old = gaussian_log_prob(x_next, mean_old, stds)

    b = float((shift**2).mean() / (2 * std**2))
    plain = torch.log(importance_ratio(log_theta, log_old))
    assert plain.mean().item() == pytest.approx(-b, abs=4 * plain.std().item() / DRAWS**0.5)  # the left shift
    normalized = torch.log(guard_ratio(log_theta, log_old, mean_theta, mean_old, stds))
    # per draw exactly mean_dims(z·(μ_θ - μ_old)): mean 0 over the noise, whatever the step's std
    torch.testing.assert_close(normalized, (z * shift).mean(dim=1), rtol=1e-4, atol=1e-6)
    assert abs(normalized.mean().item()) < 4 * normalized.std().item() / DRAWS**0.5
    assert b > 0.05  # the plain ratio's shift is not negligible here


def test_normalized_ratio_is_exactly_one_on_policy() -> None:
    mean = torch.randn(3, 4, 2, 2)
    log_prob = torch.randn(3)
    ratio = guard_ratio(log_prob, log_prob, mean, mean.clone(), torch.tensor([0.5, 0.1, 0.02]))
    assert torch.equal(ratio, torch.ones(3))
