"""Trajectories on the tiny SD3: ODE = Euler = diffusers, recorded log-probs = recomputed ones, windows, seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline
from rewardflow_trainer.models import Guidance, SD3Family
from rewardflow_trainer.sampling import (
    SdeWindow,
    Trajectory,
    group_latent_seeds,
    recompute_step,
    sample_eval,
    sample_trajectories,
)

STEPS = 6


def _sample(family: SD3Family, prompts: list[str], seed: int = 0, **options) -> Trajectory:
    options = {"num_steps": STEPS, "guidance": Guidance(4.5), "noise_level": 0.7, **options}
    return sample_trajectories(family, prompts, generator=torch.Generator().manual_seed(seed), **options)


def test_noise_level_zero_equals_diffusers_euler_scheduler(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    guidance = Guidance(4.5)
    trajectory = _sample(tiny_family, tiny_prompts, noise_level=0.0, guidance=guidance)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(tiny_family.scheduler.config)
    scheduler.set_timesteps(STEPS)
    latents, embeds = trajectory.latents[:, 0], tiny_family.encode(tiny_prompts)
    with torch.no_grad():
        for j, t in enumerate(scheduler.timesteps):
            sigma = (t / 1000).expand(len(tiny_prompts))
            velocity = tiny_family.velocity(latents, sigma, embeds, guidance)
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
            assert torch.equal(trajectory.latents[:, j + 1], latents), f"step {j}"
    assert torch.equal(trajectory.log_probs, torch.zeros(4, STEPS))
    assert trajectory.train_steps.shape == (4, 0)


def test_sampler_image_equals_diffusers_pipeline_at_noise_zero(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    trajectory = _sample(tiny_family, tiny_prompts, noise_level=0.0)
    pipe = StableDiffusion3Pipeline(**tiny_family.components())
    pipe.set_progress_bar_config(disable=True)
    reference = pipe(
        tiny_prompts,
        negative_prompt="",
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=4.5,
        latents=trajectory.latents[:, 0].clone(),
        max_sequence_length=16,
        output_type="np",
    ).images
    # Tolerance: diffusers encodes the prompts as one batch, we encode each alone (last-bit differences).
    assert np.abs(trajectory.images.astype(np.float64) - reference * 255).max() <= 1.0
    assert trajectory.images.std() > 0
    # Given our embeddings, diffusers' denoising loop lands on our final latents bit for bit.
    embeds, negative = tiny_family.encode(tiny_prompts), tiny_family.negative_embeds(len(tiny_prompts))
    latents = pipe(
        prompt_embeds=embeds["prompt_embeds"],
        pooled_prompt_embeds=embeds["pooled_prompt_embeds"],
        negative_prompt_embeds=negative["prompt_embeds"],
        negative_pooled_prompt_embeds=negative["pooled_prompt_embeds"],
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=4.5,
        latents=trajectory.latents[:, 0].clone(),
        output_type="latent",
    ).images
    assert torch.equal(latents, trajectory.latents[:, -1])


def test_recomputed_log_prob_equals_the_recorded_one_exactly(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    guidance = Guidance(4.5)
    trajectory = _sample(tiny_family, tiny_prompts, guidance=guidance)
    tiny_family.transformer.train()  # the training path: train mode, gradients on
    for j in range(STEPS):
        out = recompute_step(tiny_family, trajectory, j, guidance)
        assert out.log_prob.requires_grad
        assert torch.equal(out.log_prob.detach(), trajectory.log_probs[:, j]), f"step {j}"
        assert not torch.equal(out.mean.detach(), out.next_latents)  # a real SDE step, not a point mass


def test_recompute_in_a_shuffled_or_smaller_batch_is_within_float_rounding(
    tiny_family: SD3Family, tiny_prompts: list[str]
) -> None:
    trajectory = _sample(tiny_family, tiny_prompts * 2)
    for rows in ([7, 2, 5, 0, 1, 6, 3, 4], [5, 1, 3]):
        part = trajectory.select(rows)
        for j in range(STEPS):
            recomputed = recompute_step(tiny_family, part, j, Guidance(4.5)).log_prob.detach()
            assert torch.allclose(recomputed, part.log_probs[:, j], rtol=0, atol=1e-5)


def test_recorded_log_prob_matches_float64_gaussian_density(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    guidance = Guidance(4.5)
    trajectory = _sample(tiny_family, tiny_prompts, guidance=guidance)
    sigmas = trajectory.sigmas[0].double()
    for j in (0, 3, STEPS - 1):
        latents, next_latents = (t.double() for t in trajectory.step_latents(j))
        with torch.no_grad():
            velocity = tiny_family.velocity(
                trajectory.latents[:, j], trajectory.sigmas[:, j], trajectory.embeds, guidance
            )
        sigma, sigma_next = sigmas[j].item(), sigmas[j + 1].item()
        s = 0.7 * math.sqrt(sigma / (1 - (sigmas[1].item() if sigma == 1 else sigma)))
        dt = sigma_next - sigma
        mean = latents * (1 + s**2 / (2 * sigma) * dt) + velocity.double() * (1 + s**2 * (1 - sigma) / (2 * sigma)) * dt
        std = s * math.sqrt(-dt)
        density = -((next_latents - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
        expected = density.mean(dim=(1, 2, 3))
        assert torch.allclose(trajectory.log_probs[:, j].double(), expected, rtol=1e-4, atol=1e-4), f"step {j}"


def test_same_generator_gives_the_same_trajectory(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    first, again = _sample(tiny_family, tiny_prompts, seed=3), _sample(tiny_family, tiny_prompts, seed=3)
    other = _sample(tiny_family, tiny_prompts, seed=4)
    assert torch.equal(first.latents, again.latents) and np.array_equal(first.images, again.images)
    assert not torch.equal(first.latents[:, -1], other.latents[:, -1])


def test_same_latent_shares_initial_noise_within_a_group_only(tiny_family: SD3Family) -> None:
    prompts = ["a red cat", "a blue dog", "a red cat", "a blue dog"]
    seeds = group_latent_seeds(prompts, epoch=2, seed=0)
    trajectory = _sample(tiny_family, prompts, latent_seeds=seeds)
    start = trajectory.latents[:, 0]
    assert torch.equal(start[0], start[2]) and torch.equal(start[1], start[3])
    assert not torch.equal(start[0], start[1])
    assert not torch.equal(trajectory.latents[0, -1], trajectory.latents[2, -1])  # SDE noise stays random
    assert group_latent_seeds(["a red cat"], epoch=3, seed=0) != seeds[:1]
    assert group_latent_seeds(["a red cat"], epoch=2, seed=0) == seeds[:1]  # stable across processes


def test_window_noises_and_trains_only_its_steps(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    window = SdeWindow(size=2, lo=1, hi=5)
    starts = set()
    for seed in range(6):
        trajectory = _sample(tiny_family, tiny_prompts, seed=seed, window=window)
        steps = trajectory.train_steps[0].tolist()
        starts.add(steps[0])
        assert steps == [steps[0], steps[0] + 1] and 1 <= steps[0] <= 3
        assert (trajectory.train_steps == trajectory.train_steps[0]).all()
        outside = [j for j in range(STEPS) if j not in steps]
        assert torch.equal(trajectory.log_probs[:, outside], torch.zeros(4, len(outside)))
        assert (trajectory.log_probs[:, steps] != 0).all()
        assert torch.equal(trajectory.noise_levels[0], torch.tensor([0.7 if j in steps else 0.0 for j in range(STEPS)]))
        for j in steps:
            assert torch.equal(
                recompute_step(tiny_family, trajectory, j, Guidance(4.5)).log_prob, trajectory.log_probs[:, j]
            )
    assert len(starts) > 1
    with pytest.raises(ValueError, match="does not fit num_steps=6"):
        _sample(tiny_family, tiny_prompts, window=SdeWindow(size=2, lo=0, hi=10))


def test_cps_trajectory_records_its_reference_log_prob(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    trajectory = _sample(tiny_family, tiny_prompts, sde_type="cps", noise_level=0.8, guidance=Guidance(cfg=False))
    assert trajectory.sde_type == "cps"
    assert (trajectory.log_probs[:, :-1] < 0).all()
    assert torch.equal(trajectory.log_probs[:, -1], torch.zeros(4))  # into sigma = 0 the CPS step has std 0
    out = recompute_step(tiny_family, trajectory, 2, Guidance(cfg=False))
    assert torch.equal(out.log_prob, trajectory.log_probs[:, 2])


def test_eval_sampling_is_the_deterministic_ode(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    seeds = group_latent_seeds(tiny_prompts, epoch=0, seed=1)
    first = sample_eval(tiny_family, tiny_prompts, num_steps=12, guidance=Guidance(4.5), latent_seeds=seeds)
    again = sample_eval(
        tiny_family, tiny_prompts, num_steps=12, guidance=Guidance(4.5), latent_seeds=seeds, generator=torch.Generator()
    )
    assert first.latents.shape[1] == 13 and first.train_steps.shape == (4, 0)
    assert np.array_equal(first.images, again.images)
    assert first.images.shape == (4, 64, 64, 3) and first.images.dtype == np.uint8


def test_trajectory_select_and_cat_keep_rows_together(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    a, b = _sample(tiny_family, tiny_prompts[:2], seed=1), _sample(tiny_family, tiny_prompts[2:], seed=2)
    both = Trajectory.cat([a, b])
    assert len(both) == 4 and both.prompts == tiny_prompts
    picked = both.select(torch.tensor([3, 0]))
    assert picked.prompts == [tiny_prompts[3], tiny_prompts[0]]
    assert torch.equal(picked.latents[0], b.latents[1]) and np.array_equal(picked.images[1], a.images[0])
    assert torch.equal(picked.embeds["prompt_embeds"][1], a.embeds["prompt_embeds"][0])
    assert torch.equal(recompute_step(tiny_family, picked, 1, Guidance(4.5)).log_prob, picked.log_probs[:, 1])


def test_unknown_sde_type_fails_before_model_work(tiny_family: SD3Family) -> None:
    with pytest.raises(ValueError, match="sde_type='flow'"):
        _sample(tiny_family, ["a cat"], sde_type="flow")
