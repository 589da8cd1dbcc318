"""The checks every model family passes (docs/families.md, "Adding a family"), written once for the family tests.

Each test module builds its tiny family and calls these; what differs between families (the diffusers pipeline
call, the guidance) is passed in. Helpers only: this module holds no tests itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from rewardflow_trainer.config import Config, LoraConfig
from rewardflow_trainer.grpo import GRPOUpdater, UpdateSettings
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import Guidance, ModelFamily
from rewardflow_trainer.presets import build_config
from rewardflow_trainer.sampling import Trajectory, sample_trajectories

PROMPTS = ("a red cat", "a blue dog on a bench", "two green apples", "a photo of a yellow car")
ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.5])


def rollout(family: ModelFamily, guidance: Guidance, steps: int, noise: float, sde_type: str = "sde") -> Trajectory:
    """The four prompts from seed 0 (one latent seed each: the noise a pipeline draws from those seeds)."""
    return sample_trajectories(
        family,
        list(PROMPTS),
        num_steps=steps,
        guidance=guidance,
        noise_level=noise,
        sde_type=sde_type,
        generator=torch.Generator().manual_seed(0),
        latent_seeds=[11, 12, 13, 14],
    )


def expected_log_prob(
    sde_type: str, x: torch.Tensor, x_next: torch.Tensor, v: torch.Tensor, sigmas: torch.Tensor, j: int, noise: float
) -> torch.Tensor:
    """The step's log-prob recomputed in float64 from docs/algorithm.md's formulas, (B,)."""
    x, x_next, v = x.double(), x_next.double(), v.double()
    sigma, sigma_next = float(sigmas[j]), float(sigmas[j + 1])
    dims = tuple(range(1, x.ndim))
    if sde_type == "cps":
        std = sigma_next * math.sin(noise * math.pi / 2)
        mean = (x - sigma * v) * (1 - sigma_next) + (x + (1 - sigma) * v) * math.sqrt(max(sigma_next**2 - std**2, 0))
        return -((x_next - mean) ** 2).mean(dim=dims)
    s = noise * math.sqrt(sigma / (1 - (float(sigmas[1]) if sigma == 1 else sigma)))
    dt = sigma_next - sigma
    mean = x * (1 + s**2 / (2 * sigma) * dt) + v * (1 + s**2 * (1 - sigma) / (2 * sigma)) * dt
    std = s * math.sqrt(-dt)
    density = -((x_next - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi)
    return density.mean(dim=dims)


def check_log_probs_match_float64(family: ModelFamily, guidance: Guidance, steps: int, sde_type: str) -> None:
    """Recorded SDE/CPS log-probs equal the float64 density of the same transition (the model's velocity in
    float32 is the only shared part); the last CPS step (sigma_next = 0) is a point mass with log-prob 0."""
    noise = 0.7
    trajectory = rollout(family, guidance, steps, noise, sde_type)
    sigmas = trajectory.sigmas[0].double()
    checked = 0
    for j in range(steps):
        if sde_type == "cps" and j == steps - 1:
            assert torch.equal(trajectory.log_probs[:, j], torch.zeros(len(PROMPTS)))
            continue
        x, x_next = trajectory.step_latents(j)
        with torch.no_grad():
            v = family.velocity(x, trajectory.sigmas[:, j], trajectory.embeds, guidance)
        expected = expected_log_prob(sde_type, x, x_next, v, sigmas, j, noise)
        assert torch.allclose(trajectory.log_probs[:, j].double(), expected, rtol=1e-4, atol=1e-5), f"step {j}"
        checked += 1
    assert checked >= steps - 1 and trajectory.log_probs.abs().sum() > 0


def updater(
    family: ModelFamily, guidance: Guidance, lora: LoraConfig | None, trained_steps: int
) -> tuple[GRPOUpdater, Policy]:
    """A GRPO updater on the family (beta 0, one optimizer step after all trained steps of a minibatch)."""
    policy = Policy(family.transformer, lora, keep_reference=False, export_lora=family.save_lora_weights)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    accelerator = Accelerator(cpu=True)
    accelerator.gradient_accumulation_steps = trained_steps
    model, optimizer = accelerator.prepare(family.transformer, optimizer)
    settings = UpdateSettings(clip_range=0.2, beta=0.0, max_grad_norm=1.0, num_trained_steps=trained_steps)
    return GRPOUpdater(family, model, policy, optimizer, accelerator, settings, guidance), policy


def check_ratio_is_exactly_one_on_policy(family: ModelFamily, guidance: Guidance, lora: LoraConfig, steps: int) -> None:
    """Before the first optimizer step the recomputed log-probs equal the recorded ones bit for bit (ratio 1);
    after it they move (the check can fail)."""
    trained = steps - 1
    grpo, _ = updater(family, guidance, lora, trained)
    batch = rollout(family, guidance, steps, 0.7)
    grpo.begin_epoch()
    first = grpo.minibatch(batch, ADVANTAGES)
    assert first["ratio_dev_on_policy"] == [0.0] * trained
    assert first["ratio_mean"] == [1.0] * trained
    second = grpo.minibatch(batch, ADVANTAGES)
    assert "ratio_dev_on_policy" not in second and any(r != 1.0 for r in second["ratio_mean"])


def epoch_config(out: Path, url: str, family: str, lora: LoraConfig, *overrides: str) -> Config:
    """The embedded default on `family`'s tiny model, one short LoRA epoch: 4 prompts x 2 images, 4 steps."""
    targets = ",".join(lora.target_modules)
    config = build_config(
        "tiny_jpeg",
        [
            f"model.family={family}",
            f"run.out_dir={out}",
            "run.epochs=1",
            "run.progress=false",
            "sample.num_steps=4",
            "sample.num_groups=4",
            "sample.group_size=2",
            "sample.batch_size=8",
            "sample.same_latent=false",
            "train.batch_size=8",
            "train.gradient_accumulation_steps=1",
            f"train.lora.rank={lora.rank}",
            f"train.lora.alpha={lora.alpha}",
            f"train.lora.target_modules={targets}",
            *overrides,
        ],
    )
    config.reward.endpoints = {"jpeg": [url]}
    return config.validate()


def all_parameters(family: ModelFamily, parts: Sequence[str]) -> dict[str, torch.Tensor]:
    """Every parameter of the family's modules `parts`, cloned, by "part.name"."""
    return {
        f"{part}.{name}": p.detach().clone() for part in parts for name, p in getattr(family, part).named_parameters()
    }


def check_one_epoch_changes_only_trainable(config: Config, parts: Sequence[str]) -> tuple[ModelFamily, Policy]:
    """One GRPO epoch through the loop (sample, rewards from the service, advantages, update): only the
    adapter's parameters change, and some do; returns the trained family and its policy."""
    from rewardflow_trainer.loop import EpochPlan, compute_advantages, sample, setup, update_policy

    acc = Accelerator(cpu=True)
    run, state = setup(config, config.reward.endpoints, acc, EpochPlan.of(config, acc.num_processes))
    before = all_parameters(run.family, parts)
    trainable = {f"transformer.{name}" for name in state.policy.named_parameters()}
    with run.scorer, run.logger:
        rollout_ = sample(run, state, 0)
        advantages = compute_advantages(run, state, rollout_, 0)
        update = update_policy(run, state, rollout_, advantages)
    assert rollout_.local_rewards["reward"].shape == (8,) and np.all(rollout_.local_rewards["reward"] < 0)
    assert update.figures["ratio_dev_on_policy"] == [0.0] * run.plan.num_trained_steps
    after = all_parameters(run.family, parts)
    assert before.keys() == after.keys()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed, "the epoch changed nothing"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    assert all("lora_" in name for name in trainable)
    return run.family, state.policy


def check_exported_lora_reproduces_the_trained_model(
    trained: ModelFamily,
    policy: Policy,
    fresh: ModelFamily,
    pipeline_of: Callable[[ModelFamily], object],
    guidance: Guidance,
    directory: Path,
) -> None:
    """Export the trained adapter (Policy.save_pretrained: the family's save_lora_weights), load it with the
    family's diffusers pipeline into a fresh copy of the base model: the fresh copy's velocity equals the trained
    one's (float32 rounding at most)."""
    policy.save_pretrained(directory)
    assert (directory / "pytorch_lora_weights.safetensors").is_file()
    embeds = trained.encode(list(PROMPTS))
    latents = trained.initial_latents(len(PROMPTS), seeds=[1, 2, 3, 4])
    sigma = torch.full((len(PROMPTS),), 0.6)
    with torch.no_grad():
        base = fresh.velocity(latents, sigma, embeds, guidance)
        pipe = pipeline_of(fresh)
        pipe.load_lora_weights(directory)  # diffusers' own loader, into the fresh family's transformer
        loaded = fresh.velocity(latents, sigma, embeds, guidance)
        tuned = trained.velocity(latents, sigma, embeds, guidance)
    assert not torch.allclose(base, tuned, atol=1e-6), "the trained adapter does not change the output"
    assert torch.allclose(loaded, tuned, rtol=0, atol=1e-6), float((loaded - tuned).abs().max())
