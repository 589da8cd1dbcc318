"""Supervised fine-tuning on each group's best sample(s) (the reference's `scripts/train_sd3_sft.py`).

Per group (prompt) the samples whose score equals the group's best are kept (all of them on ties, every
sample when all are equal, as in the reference); the others do not contribute. On the kept final clean
latents x the flow-matching loss is

    L = mean_kept mean_dims( (v_θ(x_t, t) - (ε - x))² ),   x_t = (1 - t)·x + t·ε,  t logit-normal (shifted)

with K terms (fresh ε and t) per minibatch, each its own backward. The reference multiplies every sample's
error by its 0/1 "advantage" and averages over all samples, i.e. this loss times the share of best samples.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from rewardflow_trainer.algorithms.base import (
    CONDITIONAL,
    AlgorithmUpdate,
    CleanBatch,
    Rollouts,
    Stepper,
    UpdateContext,
    append,
    finite_groups,
    gather_clean,
    logit_normal_sigmas,
    noised,
    per_sample_mse,
    rank_share,
    scheduler_shift,
    step_chunks,
)


def best_samples(prompts: list[str], scores: np.ndarray) -> list[int]:
    """Indices of every sample whose score equals its group's best, in index order. Samples with a NaN score
    (dropped) are never picked; a group with fewer than 2 others contributes nothing."""
    scores = np.asarray(scores, dtype=np.float64)
    best = [i for rows in finite_groups(prompts, scores) for i in rows if scores[i] == scores[rows].max()]
    return sorted(best)


def flow_matching_loss(
    family: Any, model: torch.nn.Module, batch: CleanBatch, noise: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """`mean_b mean_dims((v_θ(x_t, t) - (ε - x))²)` on the conditional velocity."""
    x_t, target = noised(batch.latents, noise, sigma)
    return per_sample_mse(family.velocity(x_t, sigma, batch.embeds, CONDITIONAL, transformer=model), target).mean()


class SFT:
    """Flow matching on the best samples of each group."""

    name = "sft"

    def __init__(self, ctx: UpdateContext) -> None:
        self.ctx, self.settings = ctx, ctx.config.train.sft
        self.stepper = Stepper(ctx)
        self.shift = scheduler_shift(ctx.family)

    @property
    def global_step(self) -> int:
        return self.ctx.global_step

    def sampling(self) -> AbstractContextManager[None]:
        return nullcontext()

    def update(self, rollouts: Rollouts, generators: dict[str, Any]) -> AlgorithmUpdate:
        """Best samples of every rank's groups, this rank's share, K loss terms per minibatch."""
        ctx, acc = self.ctx, self.ctx.accelerator
        clean = gather_clean(acc, rollouts.samples, rollouts.all_prompts)
        mine = rank_share(best_samples(rollouts.all_prompts, rollouts.all_scores), acc.process_index, acc.num_processes)
        kept = clean.select(mine)
        info: dict[str, list[float]] = {}
        optimizer_steps = ctx.num_minibatches // ctx.accumulation
        for _inner in range(ctx.config.train.num_inner_epochs):
            chunks, per_step = step_chunks(
                len(kept), optimizer_steps, ctx.config.train.batch_size, generators["shuffle"]
            )
            self.stepper.begin(per_step * ctx.num_trained_steps)
            for chunk in chunks:
                batch = kept.select(chunk)
                for _term in range(ctx.num_trained_steps):
                    with self.stepper.accumulate():
                        loss = self._term(batch, generators["shuffle"])
                        append(info, "loss", loss)
                        self.stepper.backward(loss, info)
                    self.stepper.after()
        return AlgorithmUpdate(info, len(mine))

    def _term(self, batch: CleanBatch, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(batch.latents.shape, generator=generator).to(batch.latents.device)
        s = self.settings
        sigma = logit_normal_sigmas(len(batch), s.logit_mean, s.logit_std, self.shift, generator).to(noise.device)
        with self.ctx.accelerator.autocast():
            return flow_matching_loss(self.ctx.family, self.ctx.model, batch, noise, sigma)
