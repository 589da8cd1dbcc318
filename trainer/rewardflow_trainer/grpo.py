"""The GRPO loss pieces: importance ratio, clipped policy loss, KL to the reference, and GRPO-Guard.

The formulas: docs/algorithm.md, "The policy loss", "The KL penalty" and "GRPO-Guard". GRPO-Guard
(arXiv 2510.22319, `train.guard`) replaces the ratio of a Flow-SDE step by its normalized form

    b       = mean_dims((μ_θ - μ_old)²) / (2·std²)           std = s·sqrt(σ - σ_next), the step's std
    ratio   = exp((log p_θ - log p_old + b) · std)
    loss_j  = L_policy(ratio) / (σ - σ_next)                  the gradient reweighting

With `x_next = μ_old + std·z`, `log p_θ - log p_old = -b + mean_dims(z·(μ_θ - μ_old))/std`: the mean
shift `-b` (why the plain ratio sits below 1) is removed and the step-dependent scale `1/std` is undone,
so `log ratio = mean_dims(z·(μ_θ - μ_old))`, mean 0 over the noise at every step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from rewardflow_trainer.sampling import Trajectory, recompute_step

if TYPE_CHECKING:
    from accelerate import Accelerator

    from rewardflow_trainer.ema import EMA
    from rewardflow_trainer.lora import Policy
    from rewardflow_trainer.models.family import Guidance, ModelFamily


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


def guard_ratio(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, mean: torch.Tensor, old_mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """GRPO-Guard's normalized ratio `exp((log p_θ - log p_old + b)·std)`, `b = mean_dims((μ_θ - μ_old)²)/(2 std²)`.

    log_prob, old_log_prob, std: (B,) (std the transition std, > 0); mean, old_mean: (B, ...). b keeps
    its gradient through μ_θ (μ_old is the rollout policy's, fixed).
    """
    shift = ((mean.float() - old_mean.float()) ** 2).flatten(1).mean(dim=1) / (2 * std**2)
    return torch.exp((log_prob - old_log_prob + shift) * std)


def trained_step_count(num_noisy_steps: int, timestep_fraction: float, windowed: bool) -> int:
    """How many of a trajectory's noisy steps are trained: the first `int(T·fraction)`, or the whole window."""
    if windowed:
        return num_noisy_steps
    return max(1, min(num_noisy_steps, int(num_noisy_steps * timestep_fraction)))


@dataclass(frozen=True)
class UpdateSettings:
    """The parts of the train config one GRPO update reads."""

    clip_range: float
    beta: float
    max_grad_norm: float
    num_trained_steps: int
    guard: bool = False  # GRPO-Guard: normalized ratio and 1/(σ - σ_next) reweighting (needs old_means)


class GRPOUpdater:
    """Runs the per-step forward/backward of GRPO on minibatches of stored trajectories.

    Each trained step j of a minibatch is its own forward and backward (inside accelerate's
    gradient accumulation, which therefore counts minibatches × trained steps); the log-prob and mean
    are recomputed through `recompute_step`, the very function the rollout used, so that before the
    first optimizer step the ratio is exactly 1. `model` is what accelerate prepared (DDP in
    multi-process runs); the reference pass runs without gradients on `policy.reference()`.
    """

    def __init__(
        self,
        family: ModelFamily,
        model: torch.nn.Module,
        policy: Policy,
        optimizer: torch.optim.Optimizer,
        accelerator: Accelerator,
        settings: UpdateSettings,
        guidance: Guidance,
        ema: EMA | None = None,
        global_step: int = 0,
    ) -> None:
        self.family, self.model, self.policy = family, model, policy
        self.optimizer, self.accelerator, self.settings = optimizer, accelerator, settings
        self.guidance, self.ema = guidance, ema
        self.global_step = global_step
        self.on_policy = False
        self._params = policy.parameters()

    def begin_epoch(self) -> None:
        """Mark that fresh rollouts were just sampled with the current weights."""
        self.on_policy = True

    def minibatch(
        self, batch: Trajectory, advantages: torch.Tensor, old_means: torch.Tensor | None = None
    ) -> dict[str, list[float]]:
        """Train on one minibatch, step by step; returns per-step figures (ratio_mean, clipfrac, ...).

        old_means: (B, W, *latent) the rollout policy's step means, required with `settings.guard`.
        """
        if self.settings.guard and old_means is None:
            raise ValueError("GRPOUpdater.minibatch: train.guard needs the rollout policy's step means (old_means)")
        info: dict[str, list[float]] = {}
        for j in range(self.settings.num_trained_steps):
            step = batch.train_steps[:, j]
            with self.accelerator.accumulate(self.model):
                with self.accelerator.autocast():
                    out = recompute_step(self.family, batch, step, self.guidance, transformer=self.model)
                    if self.settings.beta > 0:
                        with torch.no_grad(), self.policy.reference() as reference:
                            ref = recompute_step(self.family, batch, step, self.guidance, transformer=reference)
                old_log_prob = batch.log_probs.gather(1, step[:, None])[:, 0]
                if self.settings.guard:
                    ratio = guard_ratio(out.log_prob, old_log_prob, out.mean, old_means[:, j], out.std)
                    policy_loss = clipped_policy_loss(advantages, ratio, self.settings.clip_range)
                    # per-sample reweighting: max(-A·r, -A·clip(r)) / Δσ is the same loss with A / Δσ
                    loss = clipped_policy_loss(advantages / step_size(batch, step), ratio, self.settings.clip_range)
                else:
                    ratio = importance_ratio(out.log_prob, old_log_prob)
                    policy_loss = clipped_policy_loss(advantages, ratio, self.settings.clip_range)
                    loss = policy_loss
                if self.settings.beta > 0:
                    kl = kl_to_reference(out.mean, ref.mean, out.noise_scale)
                    loss = loss + self.settings.beta * kl
                    _append(info, "kl", kl)
                self.accelerator.backward(loss)
                if self.accelerator.sync_gradients:
                    norm = self.accelerator.clip_grad_norm_(self._params, self.settings.max_grad_norm)
                    _append(info, "grad_norm", norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            if self.on_policy:
                # No optimizer step since the rollout: this is the sampling policy, the ratio must be 1.
                _append(info, "ratio_dev_on_policy", (ratio - 1).abs().max())
            if self.accelerator.sync_gradients:
                if self.ema is not None:
                    self.ema.step(self.global_step)
                self.global_step += 1
                self.on_policy = False
            _append(info, "policy_loss", policy_loss)
            _append(info, "loss", loss)
            _append(info, "ratio_mean", ratio.mean())
            _append(info, "clipfrac", clip_fraction(ratio, self.settings.clip_range))
            _append(info, "approx_kl", approx_kl(out.log_prob, old_log_prob))
        return info


def step_size(batch: Trajectory, step: torch.Tensor) -> torch.Tensor:
    """`σ_j - σ_{j+1}` of each row's step (B,): GRPO-Guard divides the step's loss by it."""
    sigma = batch.sigmas.gather(1, step[:, None])[:, 0]
    return sigma - batch.sigmas.gather(1, step[:, None] + 1)[:, 0]


@torch.no_grad()
def rollout_means(
    family: ModelFamily,
    trajectory: Trajectory,
    guidance: Guidance,
    num_trained_steps: int,
    batch_size: int,
    model: torch.nn.Module,
) -> torch.Tensor:
    """The step means μ_old of every trained step under the current weights, (B, W, *latent).

    Called before the epoch's first optimizer step, when the current weights are the rollout's; in
    chunks of `batch_size` rows. GRPO-Guard's shift b needs them.
    """
    chunks = []
    for rows in torch.split(torch.arange(len(trajectory)), batch_size):
        part = trajectory.select(rows)
        steps = [recompute_step(family, part, part.train_steps[:, j], guidance, transformer=model).mean
                 for j in range(num_trained_steps)]  # fmt: skip
        chunks.append(torch.stack(steps, dim=1))
    return torch.cat(chunks)


def _append(info: dict[str, list[float]], key: str, value: torch.Tensor) -> None:
    info.setdefault(key, []).append(float(value.detach().float().item()))
