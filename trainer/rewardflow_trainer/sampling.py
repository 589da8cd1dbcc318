"""Trajectories with per-step log-probabilities, and the one step function that sampling and training share.

On-policy exactness (ratio == 1 bit for bit on the first inner step) holds because the rollout and the
training recompute both go through `step_log_prob` with the same inputs: the stored float32 latents, the
per-sample sigmas and noise levels, the cached prompt embeddings and the same Guidance. What the trainer
must keep equal between the two: the transformer weights and dtype, the autocast context, the Guidance
(CFG on/off, scale; the [uncond, cond] batch order is fixed here), and the batch composition of each
forward pass (the same samples, in the same order, in one call). On CPU the tiny model's forward is
row-independent (tests/trainer/test_sampling.py checks that a sample's log-prob does not change when it
is recomputed in another batch), but GPU kernels (cuBLAS, SDPA) choose algorithms by shape, so a
different train batch size or a reshuffled batch can move the last bits there: expect |ratio - 1| ~ 1e-6
rather than 0 unless train batches equal sample batches. Gradient mode and module train/eval mode do not
change the forward (no dropout in these models).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm.auto import tqdm

from rewardflow_trainer.models.family import Guidance, ModelFamily, PromptEmbeds
from rewardflow_trainer.sde import StepOutput, sde_step, step_type


@dataclass(frozen=True)
class SdeWindow:
    """Fast variant: noise on `size` consecutive steps starting in [lo, hi - size]; the other steps are ODE."""

    size: int = 2
    lo: int = 0
    hi: int = 10

    def draw_start(self, num_steps: int, generator: torch.Generator | None) -> int:
        """A window start, uniform over [lo, hi - size]."""
        if not (0 <= self.lo and self.hi <= num_steps and 1 <= self.size <= self.hi - self.lo):
            raise ValueError(
                f"SdeWindow(size={self.size}, lo={self.lo}, hi={self.hi}) does not fit num_steps={num_steps}; "
                "expected 0 <= lo, hi <= num_steps and 1 <= size <= hi - lo"
            )
        device = generator.device if generator is not None else "cpu"
        offset = torch.randint(self.hi - self.size - self.lo + 1, (1,), generator=generator, device=device)
        return self.lo + int(offset.item())


@dataclass(frozen=True)
class Trajectory:
    """A batch of B rollouts of T steps. Tensors live on the family's device; latents in the family layout.

    latents:      (B, T + 1, *latent) float32; [:, 0] the initial noise, [:, T] the final latents
    log_probs:    (B, T) float32, log-prob of latents[:, j + 1] given latents[:, j] (0 at noise-free steps)
    sigmas:       (B, T + 1) float32, the schedule, ending at 0
    timesteps:    (B, T) float32, sigmas[:, :T] * num_train_timesteps (what the transformer saw)
    noise_levels: (B, T) float32, the noise level each step used (0 outside the SDE window)
    train_steps:  (B, W) int64, indices of the steps sampled with noise, ascending: the trainable steps
    embeds:       PromptEmbeds of B rows;  images: (B, H, W, 3) uint8 (None if not decoded)
    """

    prompts: list[str]
    latents: torch.Tensor
    log_probs: torch.Tensor
    sigmas: torch.Tensor
    timesteps: torch.Tensor
    noise_levels: torch.Tensor
    train_steps: torch.Tensor
    embeds: PromptEmbeds
    images: np.ndarray | None
    sde_type: str

    def __len__(self) -> int:
        return len(self.prompts)

    def select(self, index: torch.Tensor | Sequence[int]) -> Trajectory:
        """Rows `index` (shuffling, dropping zero-advantage samples, minibatches)."""
        rows = torch.as_tensor(index, dtype=torch.long).reshape(-1).cpu()
        on_device = rows.to(self.latents.device)
        return replace(
            self,
            prompts=[self.prompts[i] for i in rows.tolist()],
            latents=self.latents[on_device],
            log_probs=self.log_probs[on_device],
            sigmas=self.sigmas[on_device],
            timesteps=self.timesteps[on_device],
            noise_levels=self.noise_levels[on_device],
            train_steps=self.train_steps[on_device],
            embeds=self.embeds.select(on_device),
            images=None if self.images is None else self.images[rows.numpy()],
        )

    @staticmethod
    def cat(parts: Sequence[Trajectory]) -> Trajectory:
        """Concatenate along the batch (the sampling batches of one epoch); windows must have one size."""
        if not parts:
            raise ValueError("Trajectory.cat: got no parts; expected at least one")
        if len({p.sde_type for p in parts}) > 1 or len({tuple(p.latents.shape[1:]) for p in parts}) > 1:
            raise ValueError("Trajectory.cat: parts differ in sde_type or steps/latent shape; expected equal")
        images = [p.images for p in parts]
        return Trajectory(
            prompts=[prompt for p in parts for prompt in p.prompts],
            latents=torch.cat([p.latents for p in parts]),
            log_probs=torch.cat([p.log_probs for p in parts]),
            sigmas=torch.cat([p.sigmas for p in parts]),
            timesteps=torch.cat([p.timesteps for p in parts]),
            noise_levels=torch.cat([p.noise_levels for p in parts]),
            train_steps=torch.cat([p.train_steps for p in parts]),
            embeds=PromptEmbeds.cat([p.embeds for p in parts]),
            images=None if any(i is None for i in images) else np.concatenate(images),
            sde_type=parts[0].sde_type,
        )

    def step_latents(self, step: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """(latents[b, step_b], latents[b, step_b + 1]) for every row b; step int or (B,) int64."""
        steps = _per_sample_steps(step, len(self), self.latents.device)
        rows = torch.arange(len(self), device=self.latents.device)
        return self.latents[rows, steps], self.latents[rows, steps + 1]


def _per_sample_steps(step: torch.Tensor | int, batch: int, device: torch.device) -> torch.Tensor:
    if isinstance(step, int):
        return torch.full((batch,), step, dtype=torch.long, device=device)
    return step.to(device=device, dtype=torch.long).reshape(batch)


def step_log_prob(
    family: ModelFamily,
    latents: torch.Tensor,
    next_latents: torch.Tensor | None,
    sigmas: torch.Tensor,
    step: torch.Tensor | int,
    embeds: PromptEmbeds,
    guidance: Guidance,
    *,
    sde_type: str,
    noise_level: torch.Tensor | float,
    generator: torch.Generator | None = None,
    transformer: torch.nn.Module | None = None,
) -> StepOutput:
    """One model step x_j -> x_{j+1}: the ONLY path for both the rollout and the training recompute.

    next_latents None: sample x_{j+1} with `generator` (rollout); given: score it (training, reference).
    Shapes: latents/next_latents (B, *latent) float32; sigmas (B, T + 1); step int or (B,);
    noise_level float or (B,). `transformer` overrides the policy (e.g. a frozen reference copy).
    """
    batch, device = latents.shape[0], latents.device
    steps = _per_sample_steps(step, batch, sigmas.device)
    sigma = sigmas.gather(1, steps[:, None])[:, 0]
    sigma_next = sigmas.gather(1, steps[:, None] + 1)[:, 0]
    sigma_second = sigmas[:, 1]
    noise = torch.as_tensor(noise_level, dtype=torch.float32, device=device).expand(batch)
    velocity = family.velocity(latents, sigma, embeds, guidance, transformer=transformer)
    return sde_step(
        sde_type,
        velocity,
        latents,
        sigma,
        sigma_next,
        sigma_second,
        noise,
        prev_sample=next_latents,
        generator=generator,
    )


def recompute_step(
    family: ModelFamily,
    trajectory: Trajectory,
    step: torch.Tensor | int,
    guidance: Guidance,
    *,
    transformer: torch.nn.Module | None = None,
) -> StepOutput:
    """Log-prob, mean and noise scale of the recorded transition `step` (int or (B,)) under the current weights."""
    steps = _per_sample_steps(step, len(trajectory), trajectory.latents.device)
    latents, next_latents = trajectory.step_latents(steps)
    return step_log_prob(
        family,
        latents,
        next_latents,
        trajectory.sigmas,
        steps,
        trajectory.embeds,
        guidance,
        sde_type=trajectory.sde_type,
        noise_level=trajectory.noise_levels.gather(1, steps[:, None])[:, 0],
        transformer=transformer,
    )


def group_latent_seeds(prompts: Sequence[str], epoch: int, seed: int) -> list[int]:
    """`same_latent` seeds: one per sample, equal for equal prompts, new every epoch (stable across processes)."""
    digests = (hashlib.sha256(f"{seed}:{epoch}:{prompt}".encode()).digest() for prompt in prompts)
    return [int.from_bytes(d[:8], "little") & (2**63 - 1) for d in digests]


@torch.no_grad()
def sample_trajectories(
    family: ModelFamily,
    prompts: Sequence[str],
    *,
    num_steps: int,
    guidance: Guidance,
    noise_level: float,
    sde_type: str = "sde",
    window: SdeWindow | None = None,
    generator: torch.Generator | None = None,
    latent_seeds: Sequence[int] | None = None,
    decode: bool = True,
    progress: bool = False,
) -> Trajectory:
    """Roll out `prompts` (one sample each) for `num_steps` steps, recording every latent and log-prob.

    Randomness: initial noise from `latent_seeds` (same_latent, see group_latent_seeds) or `generator`;
    the window start and all SDE noise from `generator`. Same generator state -> same trajectory.
    """
    step_type(sde_type)  # fail before any model work on an unknown type
    batch = len(prompts)
    embeds = family.encode(prompts)
    schedule = family.sigmas(num_steps)
    sigmas = schedule.to(torch.float32).unsqueeze(0).repeat(batch, 1)
    latents = family.initial_latents(batch, generator=generator, seeds=latent_seeds)
    device = latents.device
    if window is not None:
        start = window.draw_start(num_steps, generator)
        noisy = torch.zeros(num_steps, dtype=torch.bool)
        noisy[start : start + window.size] = True
    else:
        noisy = torch.full((num_steps,), noise_level > 0 and sde_type != "ode")
    noise_levels = torch.where(noisy, noise_level, 0.0).to(torch.float32).unsqueeze(0).repeat(batch, 1).to(device)
    train_steps = noisy.nonzero()[:, 0].unsqueeze(0).repeat(batch, 1).to(device)

    all_latents, log_probs = [latents], []
    for j in tqdm(range(num_steps), disable=not progress, desc="sampling", leave=False):
        out = step_log_prob(
            family,
            latents,
            None,
            sigmas,
            j,
            embeds,
            guidance,
            sde_type=sde_type,
            noise_level=noise_levels[:, j],
            generator=generator,
        )
        latents = out.next_latents
        all_latents.append(latents)
        log_probs.append(out.log_prob)

    return Trajectory(
        prompts=list(prompts),
        latents=torch.stack(all_latents, dim=1),
        log_probs=torch.stack(log_probs, dim=1),
        sigmas=sigmas,
        timesteps=sigmas[:, :-1] * family.num_train_timesteps,
        noise_levels=noise_levels,
        train_steps=train_steps,
        embeds=embeds,
        images=family.decode(latents) if decode else None,
        sde_type=sde_type,
    )


def sample_eval(
    family: ModelFamily,
    prompts: Sequence[str],
    *,
    num_steps: int = 40,
    guidance: Guidance,
    generator: torch.Generator | None = None,
    latent_seeds: Sequence[int] | None = None,
    progress: bool = False,
) -> Trajectory:
    """Evaluation rollout: the deterministic ODE (noise 0) with more steps (40 for SD3.5)."""
    return sample_trajectories(
        family,
        prompts,
        num_steps=num_steps,
        guidance=guidance,
        noise_level=0.0,
        sde_type="ode",
        generator=generator,
        latent_seeds=latent_seeds,
        progress=progress,
    )
