"""DiffusionNFT: online RL on the forward process (Zheng et al., arXiv 2509.16117; NVlabs/DiffusionNFT).

No log-probs, no SDE: rollouts come from the "old" policy with the deterministic ODE sampler and without CFG,
and only their final clean latents x0 are kept. Each reward becomes an optimality probability
`r = clip(A, -C, C) / (2C) + 1/2` in [0, 1] (A the group advantage, C = train.adv_clip_max). With
`x_t = (1 - t)·x0 + t·ε`, `v = ε - x0`, the paper's implicit positive and negative policies are

    v⁺ = (1 - β)·v_old + β·v_θ,     v⁻ = (1 + β)·v_old - β·v_θ       (v_old: the old policy, no gradient)

and the objective is `E[ r·‖v⁺(x_t) - v‖² + (1 - r)·‖v⁻(x_t) - v‖² ]`: the positive policy is pulled toward
good samples and the negative one toward bad samples, which pushes v_θ away from them. As in the public code
we write it on the predicted clean latents `x̂0 = x_t - t·v` (so each term is `t²·‖v± - v‖²`, per element
averaged), each term divided by its own stop-gradient scale `w± = max(mean_dims|x̂0± - x0|, 1e-5)`:

    L = C · mean_b( r·mean_dims((x̂0⁺ - x0)²)/w⁺ + (1 - r)·mean_dims((x̂0⁻ - x0)²)/w⁻ ) / β
        + train.beta · mean_b mean_dims((v_θ - v_ref)²)                (only when train.beta > 0)

t is drawn per sample from the rollout's own σ grid (a random permutation of its steps, K of them per
minibatch, each term its own backward). After every epoch the old policy moves toward the policy:
`old = d·old + (1 - d)·θ`, `d = min(rate·max(0, step - delay), d_max)` at the current optimizer step
(the public code's decay schedules; β, rate, delay and d_max are `train.nft.*`).

A sample without a finite reward (dropped: reward.on_invalid_score = drop) weighs 0: the means above run over the
others (each rank still runs every backward pass, so ranks that dropped different counts stay in step).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch

from rewardflow_trainer.algorithms.base import (
    CONDITIONAL,
    AlgorithmUpdate,
    Rollouts,
    Stepper,
    UpdateContext,
    append,
    noised,
    per_sample_mse,
    step_chunks,
)
from rewardflow_trainer.algorithms.shadow import ShadowWeights, sampling_with
from rewardflow_trainer.sampling import Trajectory

WEIGHT_FLOOR = 1e-5


def optimality(advantages: torch.Tensor, adv_clip_max: float) -> torch.Tensor:
    """`r = clip(A, -C, C) / (2C) + 1/2`, the optimality probability in [0, 1]."""
    return advantages.clamp(-adv_clip_max, adv_clip_max) / (2 * adv_clip_max) + 0.5


def nft_loss(
    v_theta: torch.Tensor,
    v_old: torch.Tensor,
    x_t: torch.Tensor,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    r: torch.Tensor,
    beta: float,
    adv_clip_max: float,
    kept: torch.Tensor | None = None,
) -> torch.Tensor:
    """The NFT policy loss (module docstring) on velocities (B, ...), sigma and r (B,); a scalar. `kept` (B,) bool:
    the samples it averages over (default all)."""
    t = sigma.reshape(-1, *([1] * (x0.ndim - 1)))
    v_old = v_old.detach().float()
    positive = beta * v_theta.float() + (1 - beta) * v_old
    negative = (1 + beta) * v_old - beta * v_theta.float()
    terms = []
    for velocity in (positive, negative):
        x0_hat = x_t.float() - t * velocity
        with torch.no_grad():
            scale = (x0_hat - x0).abs().flatten(1).mean(dim=1).clamp(min=WEIGHT_FLOOR)
        terms.append(per_sample_mse(x0_hat, x0) / scale)
    return adv_clip_max * kept_mean((r * terms[0] + (1 - r) * terms[1]) / beta, kept)


def kept_mean(values: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
    """The mean of `values` (B,) over the `kept` samples; 0 (still a graph, for the backward) when none is kept."""
    if kept is None:
        return torch.mean(values)
    # where(), not a product: a dropped sample's term must not reach the sum even if it is not finite.
    chosen = torch.where(kept, values, torch.zeros_like(values))
    return chosen.sum() / kept.sum().clamp(min=1)


def training_sigmas(samples: Trajectory, count: int, generator: torch.Generator) -> torch.Tensor:
    """(B, count) σ values: per sample, `count` steps of its own grid in a random order."""
    steps = samples.sigmas.shape[1] - 1
    order = torch.argsort(torch.rand(len(samples), steps, generator=generator), dim=1)[:, :count]
    return samples.sigmas[:, :steps].gather(1, order.to(samples.sigmas.device))


class NFT:
    """DiffusionNFT with an old policy (second adapter / frozen copy) that samples and anchors the loss."""

    name = "nft"

    def __init__(self, ctx: UpdateContext) -> None:
        self.ctx, self.settings = ctx, ctx.config.train.nft
        self.stepper = Stepper(ctx)
        self.old = ShadowWeights(ctx.policy, "nft_old")

    @property
    def global_step(self) -> int:
        return self.ctx.global_step

    def sampling(self) -> AbstractContextManager[None]:
        return sampling_with(self.ctx.family, self.old.active())

    def update(self, rollouts: Rollouts, generators: dict[str, Any]) -> AlgorithmUpdate:
        """Every local sample, weighted by r; K loss terms per minibatch; then the old policy moves."""
        ctx, t = self.ctx, self.ctx.config.train
        samples = rollouts.samples
        r = optimality(torch.as_tensor(rollouts.advantages, dtype=torch.float32), t.adv_clip_max)
        r = r.to(samples.latents.device)
        finite = rollouts.local_finite(ctx.accelerator.process_index)
        kept = torch.as_tensor(finite).to(samples.latents.device)
        count = min(ctx.num_trained_steps, samples.sigmas.shape[1] - 1)
        info: dict[str, list[float]] = {}
        optimizer_steps = ctx.num_minibatches // ctx.accumulation
        for _inner in range(t.num_inner_epochs):
            sigmas = training_sigmas(samples, count, generators["shuffle"])
            chunks, per_step = step_chunks(len(samples), optimizer_steps, t.batch_size, generators["shuffle"])
            self.stepper.begin(per_step * count)
            for chunk in chunks:
                rows = chunk.to(samples.latents.device)
                batch = samples.select(chunk)
                for k in range(count):
                    with self.stepper.accumulate():
                        loss = self._term(batch, sigmas[rows, k], r[rows], kept[rows], generators["shuffle"], info)
                        self.stepper.backward(loss, info)
                    self.stepper.after()
        self.old.sync(self.decay(ctx.global_step))
        return AlgorithmUpdate(info, int(finite.sum()))

    def decay(self, step: int) -> float:
        """`min(rate·max(0, step - delay), d_max)`: how much of the old policy the sync keeps."""
        s = self.settings
        return min(s.decay_rate * max(0, step - s.decay_delay), s.decay_max)

    def _term(
        self,
        batch: Trajectory,
        sigma: torch.Tensor,
        r: torch.Tensor,
        kept: torch.Tensor,
        generator: torch.Generator,
        info: dict,
    ) -> torch.Tensor:
        ctx, t = self.ctx, self.ctx.config.train
        x0 = batch.latents[:, -1]
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        x_t, _ = noised(x0, noise, sigma)
        with ctx.accelerator.autocast():
            with torch.no_grad(), self.old.active() as old:
                v_old = ctx.family.velocity(x_t, sigma, batch.embeds, CONDITIONAL, transformer=old)
            v_theta = ctx.family.velocity(x_t, sigma, batch.embeds, CONDITIONAL, transformer=ctx.model)
            loss = nft_loss(v_theta, v_old, x_t, x0, sigma, r, self.settings.beta, t.adv_clip_max, kept)
            append(info, "policy_loss", loss)
            if t.beta > 0:
                with torch.no_grad(), ctx.policy.reference() as reference:
                    v_ref = ctx.family.velocity(x_t, sigma, batch.embeds, CONDITIONAL, transformer=reference)
                kl = kept_mean(per_sample_mse(v_theta, v_ref), kept)
                append(info, "kl", kl)
                loss = loss + t.beta * kl
        append(info, "loss", loss)
        append(info, "old_deviation", kept_mean(per_sample_mse(v_theta.detach(), v_old), kept))
        return loss
