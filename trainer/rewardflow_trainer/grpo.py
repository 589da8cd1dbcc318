"""The GRPO loss pieces (DESIGN §2): importance ratio, clipped policy loss, KL to the reference."""

from __future__ import annotations

import torch


def importance_ratio(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """`exp(log_prob - old_log_prob)`, (B,); old_log_prob is the one recorded during the rollout."""
    return torch.exp(log_prob - old_log_prob)


def clipped_policy_loss(advantages: torch.Tensor, ratio: torch.Tensor, clip_range: float) -> torch.Tensor:
    """PPO's pessimistic loss: `mean(max(-A·ratio, -A·clamp(ratio, 1-ε, 1+ε)))`, a scalar.

    advantages, ratio: (B,).
    """
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    return torch.mean(torch.maximum(unclipped, clipped))


def kl_to_reference(mean: torch.Tensor, mean_ref: torch.Tensor, noise_scale: torch.Tensor | float) -> torch.Tensor:
    """`mean((μ_θ - μ_ref)²) / (2 s²)`: averaged over every non-batch dimension, then over the batch.

    mean, mean_ref: (B, ...) the SDE step's means under the policy and the reference; noise_scale:
    the step's `s` (not `s·sqrt(-dt)`), a float, a scalar tensor or (B,). It is the exact
    per-dimension Gaussian KL times |dt|, as in the reference.
    """
    per_sample = ((mean.float() - mean_ref.float()) ** 2).flatten(1).mean(dim=1)
    scale = torch.as_tensor(noise_scale, dtype=per_sample.dtype, device=per_sample.device)
    return torch.mean(per_sample / (2 * scale**2))


def clip_fraction(ratio: torch.Tensor, clip_range: float) -> torch.Tensor:
    """Share of samples whose ratio left `[1-ε, 1+ε]`, a scalar."""
    return torch.mean((torch.abs(ratio - 1.0) > clip_range).float())


def approx_kl(log_prob: torch.Tensor, old_log_prob: torch.Tensor) -> torch.Tensor:
    """`0.5·mean((log_prob - old_log_prob)²)`, the reference's estimate of KL(old ‖ new), a scalar."""
    return 0.5 * torch.mean((log_prob - old_log_prob) ** 2)
