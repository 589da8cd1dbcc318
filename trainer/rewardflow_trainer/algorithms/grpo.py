"""Flow-GRPO behind the algorithm seam: drop zero-advantage samples, inner epochs over shuffled minibatches, each
trained step by step by `grpo.GRPOUpdater` (clipped ratio, KL, and GRPO-Guard with `train.guard`).

The formulas: docs/algorithm.md, "The policy loss", "The KL penalty" and "GRPO-Guard".
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from rewardflow_trainer.advantages import training_mask
from rewardflow_trainer.algorithms.base import AlgorithmUpdate, Rollouts, UpdateContext
from rewardflow_trainer.grpo import GRPOUpdater, UpdateSettings, rollout_means


class GRPO:
    """The clipped-ratio policy gradient on SDE rollouts (log-probs recorded while sampling)."""

    name = "grpo"

    def __init__(self, ctx: UpdateContext) -> None:
        t = ctx.config.train
        settings = UpdateSettings(t.clip_range, t.beta, t.max_grad_norm, ctx.num_trained_steps, guard=t.guard)
        self.ctx = ctx
        self.updater = GRPOUpdater(
            ctx.family, ctx.model, ctx.policy, ctx.optimizer, ctx.accelerator, settings, ctx.guidance, ctx.ema,
            ctx.global_step,
        )  # fmt: skip

    @property
    def global_step(self) -> int:
        return self.updater.global_step

    def sampling(self) -> AbstractContextManager[None]:
        return nullcontext()

    def update(self, rollouts: Rollouts, generators: dict[str, Any]) -> AlgorithmUpdate:
        """Drop zero-advantage samples, then inner epochs over shuffled minibatches, each trained step by step."""
        ctx, device = self.ctx, self.ctx.accelerator.device
        keep = np.flatnonzero(training_mask(rollouts.advantages, ctx.num_minibatches, generators["mask"]))
        kept = rollouts.samples.select(keep.tolist())
        kept_advantages = torch.tensor(rollouts.advantages[keep], dtype=torch.float32).to(device)
        old_means = None
        if self.updater.settings.guard:
            with ctx.accelerator.autocast():
                old_means = rollout_means(
                    ctx.family, kept, ctx.guidance, ctx.num_trained_steps, ctx.config.train.batch_size, ctx.model
                )
        figures: dict[str, list[float]] = {}
        self.updater.begin_epoch()
        for _inner in range(ctx.config.train.num_inner_epochs):
            order = torch.randperm(len(kept), generator=generators["shuffle"])
            for chunk in torch.tensor_split(order, ctx.num_minibatches):
                rows = chunk.to(device)
                means = None if old_means is None else old_means[rows]
                step_info = self.updater.minibatch(kept.select(chunk), kept_advantages[rows], means)
                for key, values in step_info.items():
                    figures.setdefault(key, []).extend(values)
        return AlgorithmUpdate(figures, len(keep))
