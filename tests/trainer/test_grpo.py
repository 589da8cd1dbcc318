"""The GRPO loss pieces against hand-written formulas (float64, element by element)."""

from __future__ import annotations

import math

import pytest
import torch
from rewardflow_trainer.grpo import (
    approx_kl,
    clip_fraction,
    clipped_policy_loss,
    importance_ratio,
    kl_to_reference,
)


def test_ratio_is_exp_of_log_prob_difference() -> None:
    new = torch.tensor([0.0, -1.0, 2.5], dtype=torch.float64)
    old = torch.tensor([0.0, -1.5, 2.0], dtype=torch.float64)
    ratio = importance_ratio(new, old)
    assert ratio.tolist() == [1.0, math.exp(0.5), math.exp(0.5)]


def test_equal_log_probs_give_ratio_exactly_one() -> None:
    log_prob = torch.randn(16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(importance_ratio(log_prob, log_prob.clone()), torch.ones(16))


def test_clipped_policy_loss_matches_ppo_formula() -> None:
    eps = 0.2
    advantages = [1.0, 1.0, -1.0, -1.0, 2.0, -3.0, 0.0]
    ratios = [1.5, 0.5, 1.5, 0.5, 1.1, 0.9, 3.0]
    expected_terms = []
    for a, r in zip(advantages, ratios, strict=True):
        clipped = min(max(r, 1 - eps), 1 + eps)
        expected_terms.append(max(-a * r, -a * clipped))
    # Spot-check the pessimism by hand: A>0, r>1+eps is clipped (-1.2); A<0, r<1-eps is clipped (0.8).
    assert expected_terms[0] == pytest.approx(-1.2)
    assert expected_terms[3] == pytest.approx(0.8)
    assert expected_terms[1] == pytest.approx(-0.5)  # A>0, r small: the unclipped, worse term
    loss = clipped_policy_loss(
        torch.tensor(advantages, dtype=torch.float64), torch.tensor(ratios, dtype=torch.float64), eps
    )
    assert loss.item() == pytest.approx(sum(expected_terms) / len(expected_terms), rel=1e-12)


def test_clipped_policy_loss_gradient_vanishes_where_clipped() -> None:
    advantages = torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    ratio = torch.tensor([1.5, 0.5, 1.05], dtype=torch.float64, requires_grad=True)
    clipped_policy_loss(advantages, ratio, 0.2).backward()
    assert ratio.grad is not None
    assert ratio.grad.tolist() == pytest.approx([0.0, 0.0, -1.0 / 3])


def test_kl_matches_per_dimension_formula() -> None:
    gen = torch.Generator().manual_seed(1)
    mean = torch.randn(3, 4, 2, 2, generator=gen, dtype=torch.float64)
    mean_ref = torch.randn(3, 4, 2, 2, generator=gen, dtype=torch.float64)
    s = 0.37
    expected = 0.0
    for b in range(3):
        sq = [(mean[b].flatten()[i] - mean_ref[b].flatten()[i]).item() ** 2 for i in range(16)]
        expected += sum(sq) / 16 / (2 * s * s)
    expected /= 3
    assert kl_to_reference(mean, mean_ref, s).item() == pytest.approx(expected, rel=1e-6)


def test_kl_accepts_per_sample_noise_scale() -> None:
    mean = torch.ones(2, 3)
    mean_ref = torch.zeros(2, 3)
    kl = kl_to_reference(mean, mean_ref, torch.tensor([1.0, 0.5]))
    assert kl.item() == pytest.approx((1 / 2 + 1 / (2 * 0.25)) / 2)


def test_kl_is_zero_for_identical_means() -> None:
    mean = torch.randn(4, 4, 8, 8)
    assert kl_to_reference(mean, mean.clone(), 0.7).item() == 0.0


def test_clip_fraction_and_approx_kl() -> None:
    ratio = torch.tensor([1.0, 1.3, 0.7, 1.1])
    assert clip_fraction(ratio, 0.2).item() == pytest.approx(0.5)
    new = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    old = torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64)
    assert approx_kl(new, old).item() == pytest.approx(0.5 * (0 + 1 + 4) / 3)
