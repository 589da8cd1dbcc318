"""The algorithm seam: what every training algorithm receives (one epoch's rollouts) and the pieces they share.

An algorithm turns `Rollouts` (grouped samples with their rewards, latents and, where sampled with noise,
per-step log-probs) into optimizer steps (`Algorithm.update`). The flow-matching ones (DPO, SFT, NFT)
train on the final clean latents `x0` only: they noise them again, `x_t = (1 - t)·x0 + t·ε`, and regress
the velocity `v = ε - x0` (docs/algorithm.md, "Flow convention").
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from rewardflow_trainer.models.family import Guidance, PromptEmbeds

if TYPE_CHECKING:
    from accelerate import Accelerator

    from rewardflow_trainer.config import Config
    from rewardflow_trainer.ema import EMA
    from rewardflow_trainer.lora import Policy
    from rewardflow_trainer.models.family import ModelFamily
    from rewardflow_trainer.sampling import Trajectory

CONDITIONAL = Guidance(scale=1.0, cfg=False)
"""The flow-matching losses regress the conditional velocity (the reference's DPO/SFT/NFT scripts do too)."""


@dataclass
class Rollouts:
    """One epoch's samples on this rank and what every rank scored.

    samples: this rank's trajectories (rows in rank order); advantages: this rank's (N,), clipped;
    all_prompts / all_scores: every rank's prompts and the scores that rank samples within a group
    (the weighted reward, or the unclipped per-reward advantage sum), rank order, (N·world,). A sample
    without a finite reward (dropped: reward.on_invalid_score = drop) has advantage 0 and score NaN.
    """

    samples: Trajectory
    advantages: np.ndarray
    all_prompts: list[str]
    all_scores: np.ndarray

    def local_finite(self, rank: int) -> np.ndarray:
        """Which of this rank's samples have a finite score, (N,) bool."""
        n = len(self.advantages)
        return np.isfinite(np.asarray(self.all_scores[rank * n : (rank + 1) * n], dtype=np.float64))


@dataclass
class UpdateContext:
    """What an algorithm trains with: the model, the optimizer, accelerate, the run's settings."""

    family: ModelFamily
    model: torch.nn.Module  # what accelerate prepared (DDP in multi-process runs)
    policy: Policy
    optimizer: torch.optim.Optimizer
    accelerator: Accelerator
    ema: EMA | None
    guidance: Guidance
    config: Config
    num_minibatches: int
    accumulation: int
    num_trained_steps: int
    global_step: int = 0


@dataclass
class AlgorithmUpdate:
    """What one epoch's update did: per-step figures (loss, ...) and how many samples it trained on."""

    figures: dict[str, list[float]]
    trained_samples: int


class Algorithm(Protocol):
    """One training algorithm: the loop samples (inside `sampling()`), scores, then calls `update`."""

    name: str
    global_step: int

    def sampling(self) -> AbstractContextManager[None]:
        """The weights rollouts are drawn from (the policy, or a frozen reference / old copy)."""
        ...

    def update(self, rollouts: Rollouts, generators: dict[str, Any]) -> AlgorithmUpdate:
        """Train on one epoch's rollouts; `generators` are the run's ("shuffle", "mask", "sample")."""
        ...


# --- timesteps and the flow-matching target --------------------------------------------------------


def scheduler_shift(family: ModelFamily) -> float:
    """The family scheduler's static time shift (3 for SD3.5), 1 where it has none or shifts dynamically."""
    config = getattr(getattr(family, "scheduler", None), "config", None) or {}
    if config.get("use_dynamic_shifting", False):
        return 1.0
    return float(config.get("shift", 1.0))


def logit_normal_sigmas(
    batch: int, mean: float, std: float, shift: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """`t = shift·u / (1 + (shift - 1)·u)`, `u = sigmoid(n)`, `n ~ N(mean, std²)`: (batch,) float32 in (0, 1).

    The reference draws u the same way (diffusers' `compute_density_for_timestep_sampling`,
    'logit_normal') and reads t off the scheduler's shifted 1000-step grid; we shift u directly.
    """
    normal = torch.randn(batch, generator=generator, dtype=torch.float32) * std + mean
    u = torch.sigmoid(normal)
    return shift * u / (1 + (shift - 1) * u)


def noised(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(x_t, v)`: `x_t = (1 - t)·x0 + t·ε` and the velocity target `v = ε - x0`; sigma (B,)."""
    t = sigma.reshape(-1, *([1] * (x0.ndim - 1))).to(x0.dtype)
    return (1 - t) * x0 + t * noise, noise - x0


def per_sample_mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`mean_dims((prediction - target)²)` in float32, (B,)."""
    return ((prediction.float() - target.float()) ** 2).flatten(1).mean(dim=1)


# --- clean samples gathered over ranks ------------------------------------------------------------


@dataclass
class CleanBatch:
    """Final clean latents with their prompts and text conditioning, (P, *latent)."""

    prompts: list[str]
    latents: torch.Tensor
    embeds: PromptEmbeds

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, rows: torch.Tensor | Sequence[int]) -> CleanBatch:
        index = torch.as_tensor(rows, dtype=torch.long).reshape(-1)
        on_device = index.to(self.latents.device)
        return CleanBatch(
            [self.prompts[i] for i in index.tolist()], self.latents[on_device], self.embeds.select(on_device)
        )


def gather_clean(accelerator: Accelerator, samples: Trajectory, all_prompts: list[str]) -> CleanBatch:
    """Every rank's final latents and embeddings, rank order (groups span ranks, so pairs need them all)."""
    latents = accelerator.gather(samples.latents[:, -1].contiguous())
    embeds = PromptEmbeds({k: accelerator.gather(t.contiguous()) for k, t in samples.embeds.tensors.items()})
    return CleanBatch(list(all_prompts), latents, embeds)


def rank_share(items: Sequence[Any], rank: int, world: int) -> list[Any]:
    """This rank's contiguous share of `items`, padded (repeating from the start) to a multiple of `world`.

    Every rank gets the same count, so every rank runs the same number of backward passes.
    """
    if not items:
        return []
    padded = list(items) + [items[i % len(items)] for i in range((-len(items)) % world)]
    size = len(padded) // world
    return padded[rank * size : (rank + 1) * size]


def groups_of(prompts: Sequence[str]) -> dict[str, list[int]]:
    """Indices of each prompt's samples, prompts in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(str(prompt), []).append(i)
    return groups


def finite_groups(prompts: Sequence[str], scores: np.ndarray) -> list[list[int]]:
    """Each prompt's samples with a finite score, in index order; groups left with fewer than 2 are left out."""
    finite = np.isfinite(np.asarray(scores, dtype=np.float64))
    groups = ([i for i in rows if finite[i]] for rows in groups_of(prompts).values())
    return [rows for rows in groups if len(rows) >= 2]


# --- optimizer steps --------------------------------------------------------------------------------


def step_chunks(
    num_items: int, optimizer_steps: int, batch_size: int, generator: torch.Generator
) -> tuple[list[torch.Tensor], int]:
    """Shuffled index chunks of at most ~`batch_size` items, `optimizer_steps` (at most one per item) times the
    returned chunks-per-step, none empty: (chunks, chunks per optimizer step)."""
    steps = max(1, min(optimizer_steps, num_items))
    per_step = min(max(1, math.ceil(num_items / (steps * batch_size))), num_items // steps)
    order = torch.randperm(num_items, generator=generator)
    return list(torch.tensor_split(order, steps * per_step)), per_step


class Stepper:
    """Backward passes accumulated into optimizer steps (grad-norm clip, EMA, step count) for one epoch.

    `begin(backwards_per_step)` sets accelerate's accumulation to that many backward passes (and
    restarts its counter), so each epoch ends on an optimizer step whatever its number of items.
    """

    def __init__(self, ctx: UpdateContext) -> None:
        self.ctx = ctx
        self._params = ctx.policy.parameters()

    def begin(self, backwards_per_step: int) -> None:
        self.ctx.accelerator.gradient_accumulation_steps = backwards_per_step
        self.ctx.accelerator.step = 0

    @contextmanager
    def accumulate(self) -> Iterator[None]:
        """One backward pass's context; the optimizer steps when accelerate says the gradients are synced."""
        acc = self.ctx.accelerator
        with acc.accumulate(self.ctx.model):
            yield

    def backward(self, loss: torch.Tensor, info: dict[str, list[float]]) -> None:
        """Backward, and on the last pass of an accumulation: clip, optimizer step, EMA, step count."""
        acc, ctx = self.ctx.accelerator, self.ctx
        acc.backward(loss)
        if acc.sync_gradients:
            append(info, "grad_norm", acc.clip_grad_norm_(self._params, ctx.config.train.max_grad_norm))
        ctx.optimizer.step()
        ctx.optimizer.zero_grad(set_to_none=True)

    def after(self) -> bool:
        """Call after each `accumulate()` block: count the optimizer step (EMA); True when one happened."""
        if not self.ctx.accelerator.sync_gradients:
            return False
        if self.ctx.ema is not None:
            self.ctx.ema.step(self.ctx.global_step)
        self.ctx.global_step += 1
        return True


def append(info: dict[str, list[float]], key: str, value: torch.Tensor | float) -> None:
    value = value.detach().float().item() if isinstance(value, torch.Tensor) else float(value)
    info.setdefault(key, []).append(value)
