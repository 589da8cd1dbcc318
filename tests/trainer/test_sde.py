"""The step dynamics against independent float64 evaluations of the formulas of docs/algorithm.md."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from rewardflow_trainer.sde import STEP_TYPES, gaussian_log_prob, sde_step

B, SHAPE = 3, (4, 5, 6)


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn((B, *SHAPE), generator=g), torch.randn((B, *SHAPE), generator=g)


def _per_sample(values: list[float]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def _float64_flow_sde(x, v, sigma, sigma_next, sigma_second, a, x_next):
    """The Flow-SDE of docs/algorithm.md written out in float64 numpy, one sample at a time."""
    x, v, x_next = (np.asarray(t, dtype=np.float64) for t in (x, v, x_next))
    denominator_sigma = sigma_second if sigma == 1 else sigma
    s = a * math.sqrt(sigma / (1 - denominator_sigma))
    dt = sigma_next - sigma
    mu = x * (1 + s**2 / (2 * sigma) * dt) + v * (1 + s**2 * (1 - sigma) / (2 * sigma)) * dt
    std = s * math.sqrt(-dt)
    log_density = -((x_next - mu) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return mu, std, s, log_density.mean()


@pytest.mark.parametrize("sigmas", [(0.7073, 0.6022), (1.0, 0.9601), (0.0089, 0.0)])
def test_flow_sde_log_prob_matches_float64_gaussian_density(sigmas: tuple[float, float]) -> None:
    x, v = _inputs()
    sigma, sigma_next = sigmas
    a, second = 0.7, 0.9601
    out = sde_step(
        "sde",
        v,
        x,
        _per_sample([sigma] * B),
        _per_sample([sigma_next] * B),
        _per_sample([second] * B),
        _per_sample([a] * B),
        generator=torch.Generator().manual_seed(1),
    )
    for b in range(B):
        mu, std, s, log_prob = _float64_flow_sde(
            x[b].numpy(),
            v[b].numpy(),
            np.float32(sigma).item(),
            np.float32(sigma_next).item(),
            np.float32(second).item(),
            np.float32(a).item(),
            out.next_latents[b].numpy(),
        )
        np.testing.assert_allclose(out.mean[b].numpy(), mu, rtol=1e-5, atol=1e-6)
        assert out.std[b].item() == pytest.approx(std, rel=1e-5)
        assert out.noise_scale[b].item() == pytest.approx(s, rel=1e-5)
        assert out.log_prob[b].item() == pytest.approx(log_prob, rel=1e-4, abs=1e-5)


def test_sigma_one_substitutes_the_second_sigma_only_in_the_denominator() -> None:
    x, v = _inputs()
    out = sde_step(
        "sde", v, x, _per_sample([1.0] * B), _per_sample([0.96] * B), _per_sample([0.96] * B), _per_sample([0.7] * B)
    )
    expected = 0.7 * math.sqrt(1.0 / (1 - 0.96))
    assert torch.allclose(out.noise_scale, torch.full((B,), expected), rtol=1e-5)
    assert torch.isfinite(out.log_prob).all()


def test_cps_step_matches_float64_formula() -> None:
    x, v = _inputs(2)
    sigma, sigma_next, a = 0.6022, 0.4649, 0.8
    out = sde_step(
        "cps",
        v,
        x,
        _per_sample([sigma] * B),
        _per_sample([sigma_next] * B),
        _per_sample([1.0] * B),
        _per_sample([a] * B),
        generator=torch.Generator().manual_seed(3),
    )
    x64, v64 = x.double().numpy(), v.double().numpy()
    sigma, sigma_next, a = (np.float32(t).item() for t in (sigma, sigma_next, a))
    std = sigma_next * math.sin(a * math.pi / 2)
    mu = (x64 - sigma * v64) * (1 - sigma_next) + (x64 + (1 - sigma) * v64) * math.sqrt(sigma_next**2 - std**2)
    np.testing.assert_allclose(out.mean.numpy(), mu, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out.std, torch.full((B,), std), rtol=1e-6)
    expected_log_prob = -((out.next_latents.double().numpy() - mu) ** 2).reshape(B, -1).mean(axis=1)
    np.testing.assert_allclose(out.log_prob.numpy(), expected_log_prob, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("sde_type", ["sde", "ode"])
def test_noise_level_zero_is_the_euler_step_bit_for_bit(sde_type: str) -> None:
    x, v = _inputs(4)
    sigma, sigma_next = _per_sample([0.8577, 1.0, 0.0089]), _per_sample([0.7904, 0.9601, 0.0])
    out = sde_step(sde_type, v, x, sigma, sigma_next, _per_sample([0.9601] * B), torch.zeros(B))
    euler = x + (sigma_next - sigma).reshape(B, 1, 1, 1) * v  # diffusers: sample + dt * model_output
    assert torch.equal(out.next_latents, euler)
    assert torch.equal(out.mean, euler)


def test_cps_at_noise_zero_is_euler_up_to_rounding() -> None:
    x, v = _inputs(5)
    sigma, sigma_next = _per_sample([0.8577] * B), _per_sample([0.7904] * B)
    out = sde_step("cps", v, x, sigma, sigma_next, sigma, torch.zeros(B))
    assert torch.allclose(out.next_latents, x + (sigma_next - sigma).reshape(B, 1, 1, 1) * v, atol=1e-6)


@pytest.mark.parametrize("sde_type", sorted(STEP_TYPES))
def test_log_prob_is_zero_and_gradients_finite_where_the_step_has_no_noise(sde_type: str) -> None:
    x, v = _inputs(6)
    v.requires_grad_(True)
    out = sde_step(
        sde_type,
        v,
        x,
        _per_sample([0.5] * B),
        _per_sample([0.4] * B),
        _per_sample([0.96] * B),
        torch.zeros(B),
        prev_sample=x + 0.01,
    )
    assert torch.equal(out.log_prob, torch.zeros(B))
    (out.log_prob.sum() + out.mean.sum()).backward()
    assert torch.isfinite(v.grad).all()


def test_scoring_a_sample_repeats_the_sampled_log_prob_exactly() -> None:
    x, v = _inputs(7)
    args = (v, x, _per_sample([0.5] * B), _per_sample([0.4] * B), _per_sample([0.96] * B), _per_sample([0.7] * B))
    sampled = sde_step("sde", *args, generator=torch.Generator().manual_seed(0))
    scored = sde_step("sde", *args, prev_sample=sampled.next_latents.clone())
    assert torch.equal(sampled.log_prob, scored.log_prob)
    assert torch.equal(sampled.mean, scored.mean)


def test_samples_follow_the_stated_gaussian() -> None:
    x, v = torch.zeros(1, 20000), torch.ones(1, 20000)
    out = sde_step(
        "sde",
        v,
        x,
        _per_sample([0.5]),
        _per_sample([0.3]),
        _per_sample([0.96]),
        _per_sample([0.9]),
        generator=torch.Generator().manual_seed(8),
    )
    residual = out.next_latents - out.mean
    assert residual.mean().abs() < 4 * out.std.item() / math.sqrt(20000)
    assert residual.std().item() == pytest.approx(out.std.item(), rel=0.03)
    # the average log-density of samples from N(mu, std^2) is -log(std) - log(sqrt(2 pi)) - 1/2
    expected = -math.log(out.std.item()) - 0.5 * math.log(2 * math.pi) - 0.5
    assert out.log_prob.item() == pytest.approx(expected, abs=0.03)


def test_low_precision_inputs_are_stepped_in_float32() -> None:
    x, v = _inputs(9)
    out = sde_step(
        "sde",
        v.to(torch.bfloat16),
        x.to(torch.bfloat16),
        _per_sample([0.5] * B),
        _per_sample([0.4] * B),
        _per_sample([0.96] * B),
        _per_sample([0.7] * B),
    )
    assert out.next_latents.dtype == out.mean.dtype == out.log_prob.dtype == torch.float32


def test_gaussian_log_prob_is_averaged_not_summed() -> None:
    mean = torch.zeros(2, 10)
    sample = torch.ones(2, 10)
    std = torch.tensor([1.0, 2.0])
    expected = [-0.5 / s**2 - math.log(s) - 0.5 * math.log(2 * math.pi) for s in (1.0, 2.0)]
    assert torch.allclose(gaussian_log_prob(sample, mean, std), torch.tensor(expected))


def test_unknown_sde_type_names_the_valid_ones() -> None:
    x, v = _inputs()
    with pytest.raises(ValueError, match=r"sde_type='euler'.*\['cps', 'ode', 'sde'\]"):
        sde_step("euler", v, x, torch.ones(B), torch.ones(B), torch.ones(B), torch.ones(B))
