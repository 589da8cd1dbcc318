"""Training algorithms behind one seam (base.Algorithm): each turns an epoch's rollouts into optimizer steps.

`train.algorithm` picks one: grpo (Flow-GRPO; `train.guard` for GRPO-Guard), dpo (Diffusion-DPO), sft
(flow matching on each group's best samples), nft (DiffusionNFT). The formulas: docs/algorithm.md and each
module's docstring. The loop asks `rollout_settings` how to sample (NFT: the ODE without CFG) and
`loss_terms` how many backward passes a minibatch gets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from rewardflow_trainer.algorithms.base import Algorithm, AlgorithmUpdate, Rollouts, UpdateContext
from rewardflow_trainer.algorithms.dpo import DPO
from rewardflow_trainer.algorithms.grpo import GRPO
from rewardflow_trainer.algorithms.nft import NFT
from rewardflow_trainer.algorithms.sft import SFT
from rewardflow_trainer.config import Config
from rewardflow_trainer.grpo import trained_step_count
from rewardflow_trainer.models.family import Guidance
from rewardflow_trainer.sampling import SdeWindow

ALGORITHMS: dict[str, Callable[[UpdateContext], Algorithm]] = {"grpo": GRPO, "dpo": DPO, "sft": SFT, "nft": NFT}

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AlgorithmUpdate",
    "RolloutSettings",
    "Rollouts",
    "UpdateContext",
    "build_algorithm",
    "loss_terms",
    "needs_reference",
    "rollout_settings",
]


@dataclass(frozen=True)
class RolloutSettings:
    """How an algorithm's rollouts are sampled (and, for the guidance, trained and evaluated)."""

    noise_level: float
    sde_type: str
    window: SdeWindow | None
    guidance: Guidance


def rollout_settings(config: Config) -> RolloutSettings:
    """The sample config's SDE, window and CFG; NFT samples with the deterministic ODE and no CFG."""
    s = config.sample
    if config.train.algorithm == "nft":
        return RolloutSettings(0.0, "ode", None, Guidance(1.0, cfg=False))
    window = SdeWindow(*s.sde_window) if s.sde_window is not None else None
    return RolloutSettings(s.noise_level, s.sde_type, window, Guidance(s.guidance_scale, s.cfg, s.detach_uncond))


def loss_terms(config: Config) -> int:
    """Backward passes per minibatch: GRPO's trained steps; for the others int(T·timestep_fraction) (at least 1)."""
    s, t = config.sample, config.train
    if t.algorithm == "grpo":
        return trained_step_count(s.num_train_timesteps(), t.timestep_fraction, s.sde_window is not None)
    return trained_step_count(s.num_steps, t.timestep_fraction, False)


def needs_reference(config: Config) -> bool:
    """Whether the policy must keep its initial weights (KL term, offline DPO's reference)."""
    t = config.train
    if t.algorithm == "dpo":
        return t.dpo.ref_update_step is None
    return t.algorithm in ("grpo", "nft") and t.beta > 0


def build_algorithm(ctx: UpdateContext) -> Algorithm:
    """The configured algorithm on `ctx`."""
    return ALGORITHMS[ctx.config.train.algorithm](ctx)
