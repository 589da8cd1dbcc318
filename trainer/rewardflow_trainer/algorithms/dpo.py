"""Diffusion-DPO on the rollouts (Wallace et al., arXiv 2311.12908; the reference's `scripts/train_sd3_dpo.py`).

Per group (prompt) the best and the worst sample are the pair (winner w, loser l); groups whose scores are all
equal give no pair. Both final clean latents are noised with the SAME noise ε and the SAME t (logit-normal,
shifted like the scheduler), and the velocity errors of the policy θ and of the reference are compared:

    e_θ(x) = mean_dims((v_θ(x_t, t) - (ε - x))²),   e_ref(x) likewise with the reference
    inside = -β/2 · [(e_θ(w) - e_ref(w)) - (e_θ(l) - e_ref(l))]
    L      = mean_pairs( -log σ(inside) )

β = `train.dpo.beta` (100, the reference's). The reference model is the policy at the last sync: every
`train.dpo.ref_update_step` optimizer steps (checked before each epoch's sampling) it is copied from the
policy (a second LoRA adapter, or a frozen copy for full fine-tuning); null never syncs: offline DPO against
the initial model. Rollouts are drawn from the reference (`train.dpo.sample_from = "reference"`, as the
reference script does) or from the policy. Each minibatch of pairs gets `K` loss terms (fresh ε and t each,
K = the trained step count, int(T·timestep_fraction)), each its own backward, as in the reference.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
from rewardflow_trainer.algorithms.shadow import ShadowWeights, sampling_with
from rewardflow_trainer.models.family import PromptEmbeds


def preference_pairs(prompts: list[str], scores: np.ndarray) -> list[tuple[int, int]]:
    """(winner, loser) indices per prompt: its best and worst score (first on ties); none where all are equal.
    Samples with a NaN score (dropped) are never picked; a group with fewer than 2 others gives no pair."""
    scores = np.asarray(scores, dtype=np.float64)
    pairs = []
    for rows in finite_groups(prompts, scores):
        group = scores[rows]
        best, worst = int(np.argmax(group)), int(np.argmin(group))
        if group[best] > group[worst]:
            pairs.append((rows[best], rows[worst]))
    return pairs


def dpo_loss(
    policy_w: torch.Tensor, policy_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(mean(-log σ(inside)), inside)`, `inside = -β/2·((e_θ(w) - e_ref(w)) - (e_θ(l) - e_ref(l)))`; errors (P,)."""
    inside = -0.5 * beta * ((policy_w - ref_w) - (policy_l - ref_l))
    return torch.mean(-F.logsigmoid(inside)), inside


class DPO:
    """Online/offline Diffusion-DPO with a reference synced every `ref_update_step` optimizer steps."""

    name = "dpo"

    def __init__(self, ctx: UpdateContext) -> None:
        self.ctx, self.settings = ctx, ctx.config.train.dpo
        self.stepper = Stepper(ctx)
        self.shadow = ShadowWeights(ctx.policy, "dpo_ref") if self.settings.ref_update_step is not None else None
        self.last_sync = ctx.global_step
        self.shift = scheduler_shift(ctx.family)

    @property
    def global_step(self) -> int:
        return self.ctx.global_step

    def reference(self) -> AbstractContextManager[torch.nn.Module]:
        """The reference module: the synced copy, or (offline) the initial model (`Policy.reference()`)."""
        return self.shadow.active() if self.shadow is not None else self.ctx.policy.reference()

    def sampling(self) -> AbstractContextManager[None]:
        """Sync the reference when due, then sample from it (or from the policy)."""
        every = self.settings.ref_update_step
        if self.shadow is not None and self.global_step - self.last_sync >= every:
            self.shadow.sync(0.0)
            self.last_sync = self.global_step
        if self.settings.sample_from == "policy":
            return nullcontext()
        return sampling_with(self.ctx.family, self.reference())

    def update(self, rollouts: Rollouts, generators: dict[str, Any]) -> AlgorithmUpdate:
        """Pairs from every rank's groups, this rank's share, K loss terms per minibatch of pairs."""
        ctx, acc = self.ctx, self.ctx.accelerator
        pairs = preference_pairs(rollouts.all_prompts, rollouts.all_scores)
        clean = gather_clean(acc, rollouts.samples, rollouts.all_prompts)
        mine = rank_share(pairs, acc.process_index, acc.num_processes)
        info: dict[str, list[float]] = {}
        if not mine:
            return AlgorithmUpdate(info, 0)
        winners = clean.select([w for w, _ in mine])
        losers = clean.select([loser for _, loser in mine])
        optimizer_steps = ctx.num_minibatches // ctx.accumulation
        pair_batch = max(1, ctx.config.train.batch_size // 2)
        for _inner in range(ctx.config.train.num_inner_epochs):
            chunks, per_step = step_chunks(len(mine), optimizer_steps, pair_batch, generators["shuffle"])
            self.stepper.begin(per_step * ctx.num_trained_steps)
            for chunk in chunks:
                for _term in range(ctx.num_trained_steps):
                    with self.stepper.accumulate():
                        loss = self._term(winners.select(chunk), losers.select(chunk), generators["shuffle"], info)
                        self.stepper.backward(loss, info)
                    self.stepper.after()
        return AlgorithmUpdate(info, 2 * len(mine))

    def _term(
        self, winners: CleanBatch, losers: CleanBatch, generator: torch.Generator, info: dict[str, list[float]]
    ) -> torch.Tensor:
        """One loss term: shared ε and t for winner and loser, policy and reference errors, the DPO loss."""
        ctx, s = self.ctx, self.settings
        pairs = len(winners)
        noise = torch.randn(winners.latents.shape, generator=generator).to(winners.latents.device)
        sigma = logit_normal_sigmas(pairs, s.logit_mean, s.logit_std, self.shift, generator).to(noise.device)
        x_t, target = noised(
            torch.cat([winners.latents, losers.latents]), torch.cat([noise, noise]), torch.cat([sigma, sigma])
        )
        embeds = PromptEmbeds.cat([winners.embeds, losers.embeds])
        with ctx.accelerator.autocast():
            with torch.no_grad(), self.reference() as reference:
                ref_error = per_sample_mse(
                    ctx.family.velocity(x_t, torch.cat([sigma, sigma]), embeds, CONDITIONAL, transformer=reference),
                    target,
                )
            error = per_sample_mse(
                ctx.family.velocity(x_t, torch.cat([sigma, sigma]), embeds, CONDITIONAL, transformer=ctx.model), target
            )
        loss, inside = dpo_loss(error[:pairs], error[pairs:], ref_error[:pairs], ref_error[pairs:], s.beta)
        append(info, "loss", loss)
        append(info, "winner_err", error[:pairs].mean())
        append(info, "loser_err", error[pairs:].mean())
        append(info, "implicit_acc", (inside > 0).float().mean())
        return loss
