"""Model-family benchmark (FLUX, Qwen-Image) on the tiny random models, measured side by side in one run.

    .venv/bin/python bench/family_bench.py [--family flux|qwen_image|all] [--batch 8] [--repeats 5]

Per family, with the family's preset settings scaled to the tiny model (64x64, same prompts, same embeddings):
  (1) sampling: the family's diffusers pipeline (Euler ODE, no log-probs), against our sampler at noise 0 and
      as in training (the preset's step type and noise on every step), log-probs recorded: the ratios ours/pipeline;
      a check first: from the same initial noise our noise-0 sampler ends on the pipeline's final latents;
  (2) one GRPO update (every trained step's forward and backward, LoRA) on a trajectory sampled with the
      fast preset's SDE window, against the same update on a full trajectory (every step but the last
      trained, as without a window): the ratio window/full.
Each row: best and median wall time and median CPU time over `--repeats` interleaved runs after one warm-up each
(trainer_bench.interleaved_timings).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from diffusers import FluxPipeline, QwenImagePipeline
from rewardflow_trainer.config import LoraConfig
from rewardflow_trainer.family_presets import FLUX_LORA_TARGETS, QWEN_IMAGE_LORA_TARGETS
from rewardflow_trainer.grpo import GRPOUpdater, UpdateSettings, trained_step_count
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import FluxFamily, Guidance, ModelFamily, PromptEmbeds, QwenImageFamily
from rewardflow_trainer.prompts import BUILTIN_PROMPT_SETS
from rewardflow_trainer.sampling import SdeWindow, Trajectory, sample_trajectories
from trainer_bench import Timing, interleaved_timings


@dataclass(frozen=True)
class Setup:
    """One family's bench settings: its tiny model, guidance, steps, noise, step type and window, LoRA targets."""

    build: Callable[[], ModelFamily]
    guidance: Guidance
    steps: int
    noise: float
    sde_type: str
    window: SdeWindow
    window_sde_type: str
    window_noise: float
    targets: tuple[str, ...]
    pipeline: Callable[[ModelFamily, PromptEmbeds, torch.Tensor, int, Guidance, str], object]


def flux_pipeline(
    family: ModelFamily, embeds: PromptEmbeds, latents: torch.Tensor, steps: int, guidance: Guidance, output: str
):
    """FluxPipeline from our embeddings and initial noise: its final latents ("latent") or images ("np")."""
    pipe = FluxPipeline(**family.components())
    pipe.set_progress_bar_config(disable=True)
    common = {"height": family.resolution, "width": family.resolution, "num_inference_steps": steps}
    inputs = {"prompt_embeds": embeds["prompt_embeds"], "pooled_prompt_embeds": embeds["pooled_prompt_embeds"]}
    return pipe(**inputs, **common, guidance_scale=guidance.scale, latents=latents.clone(), output_type=output).images


def qwen_pipeline(
    family: ModelFamily, embeds: PromptEmbeds, latents: torch.Tensor, steps: int, guidance: Guidance, output: str
):
    """QwenImagePipeline (true CFG) from our embeddings, trimmed as the family trims them, and initial noise."""
    pipe = QwenImagePipeline(**family.components())
    pipe.set_progress_bar_config(disable=True)
    negative = family.negative_embeds(latents.shape[0])
    length = int(embeds["prompt_embeds_mask"].sum(dim=1).max())
    negative_length = int(negative["prompt_embeds_mask"].sum(dim=1).max())
    inputs = {
        "prompt_embeds": embeds["prompt_embeds"][:, :length],
        "prompt_embeds_mask": embeds["prompt_embeds_mask"][:, :length],
        "negative_prompt_embeds": negative["prompt_embeds"][:, :negative_length],
        "negative_prompt_embeds_mask": negative["prompt_embeds_mask"][:, :negative_length],
        "true_cfg_scale": guidance.scale,
        "height": family.resolution,
        "width": family.resolution,
        "num_inference_steps": steps,
    }
    return pipe(**inputs, latents=latents.clone(), output_type=output).images


SETUPS = {
    # flux_pickscore: 6 Flow-SDE steps at 0.9; flux_pickscore_fast: CPS 0.8 on a window of 3 in (0, 3).
    "flux": Setup(
        FluxFamily.tiny, Guidance(3.5, cfg=False), 6, 0.9, "sde", SdeWindow(3, 0, 3), "cps", 0.8,
        FLUX_LORA_TARGETS, flux_pipeline,
    ),
    # qwen_image_pickscore: 10 steps, true CFG 4, Flow-SDE at 1.2 on a window of 2 in (0, 5).
    "qwen_image": Setup(
        QwenImageFamily.tiny, Guidance(4.0, cfg=True), 10, 1.2, "sde", SdeWindow(2, 0, 5), "sde", 1.2,
        QWEN_IMAGE_LORA_TARGETS, qwen_pipeline,
    ),
}  # fmt: skip


def sampling_overhead(name: str, setup: Setup, batch: int, repeats: int) -> None:
    family = setup.build()
    prompts = [BUILTIN_PROMPT_SETS["tiny"][i % 8] for i in range(batch)]
    embeds = family.encode(prompts)

    def ours(noise: float, sde_type: str, generator: torch.Generator) -> Trajectory:
        kind = sde_type if noise > 0 else "ode"
        options = {"num_steps": setup.steps, "guidance": setup.guidance, "noise_level": noise, "sde_type": kind}
        return sample_trajectories(family, prompts, generator=generator, **options)

    trajectory = ours(0.0, "ode", torch.Generator().manual_seed(0))
    with torch.no_grad():
        final = setup.pipeline(family, embeds, trajectory.latents[:, 0], setup.steps, setup.guidance, "latent")
    gap = float((final.to(torch.float32) - trajectory.latents[:, -1]).abs().max())
    print(f"[{name}] check: our noise-0 sampler vs the pipeline from the same noise: final latents max |Δ| {gap:.2e}")

    generator = torch.Generator().manual_seed(1)
    noise = torch.Generator().manual_seed(2)

    def pipeline() -> object:
        with torch.no_grad():
            start = family.initial_latents(batch, generator=noise)
            return setup.pipeline(family, embeds, start, setup.steps, setup.guidance, "np")

    label = f"ours, {setup.sde_type} noise {setup.noise} + log-probs"
    timings = interleaved_timings(
        {
            f"diffusers {name} pipeline (ODE)": pipeline,
            "ours, noise 0 (ODE) + log-probs": lambda: ours(0.0, "ode", generator),
            label: lambda: ours(setup.noise, setup.sde_type, generator),
        },
        repeats,
    )
    print(f"(1) sampling {batch} images {family.resolution}px, {setup.steps} steps, {setup.guidance}, decoded")
    report(timings, batch, "pipe")


def train_step_ratio(name: str, setup: Setup, batch: int, repeats: int) -> None:
    family = setup.build()
    prompts = [BUILTIN_PROMPT_SETS["tiny"][i % 8] for i in range(batch)]
    policy = Policy(family.transformer, LoraConfig(rank=8, alpha=16.0, target_modules=setup.targets), False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(family.transformer, optimizer)
    advantages = torch.linspace(-1, 1, batch)

    def trajectory(window: SdeWindow | None) -> Trajectory:
        sde_type, noise = (setup.window_sde_type, setup.window_noise) if window else (setup.sde_type, setup.noise)
        options = {"noise_level": noise, "sde_type": sde_type, "window": window, "decode": False}
        options.update(num_steps=setup.steps, guidance=setup.guidance, generator=torch.Generator().manual_seed(0))
        return sample_trajectories(family, prompts, **options)

    def update(samples: Trajectory, trained: int) -> Callable[[], object]:
        settings = UpdateSettings(clip_range=1e-4, beta=0.0, max_grad_norm=1.0, num_trained_steps=trained)
        accelerator.gradient_accumulation_steps = trained
        grpo = GRPOUpdater(family, model, policy, optimizer, accelerator, settings, setup.guidance)
        return lambda: grpo.minibatch(samples, advantages)

    windowed, full = trajectory(setup.window), trajectory(None)
    window_steps = windowed.train_steps.shape[1]
    full_steps = trained_step_count(full.train_steps.shape[1], 0.99, windowed=False)
    timings = interleaved_timings(
        {
            f"window: {window_steps} trained steps": update(windowed, window_steps),
            f"full trajectory: {full_steps} trained steps": update(full, full_steps),
        },
        repeats,
    )
    print(f"(2) one GRPO update on {batch} samples, LoRA r8 on the preset's targets, {setup.guidance}")
    report(timings, batch, "full", base_index=1)


def report(timings: dict[str, Timing], batch: int, base_name: str, base_index: int = 0) -> None:
    rows = list(timings.items())
    base = rows[base_index][1]
    print(
        f"  {'':<44} {'best ms':>8} {'median ms':>10} {'cpu ms':>8} {'best/' + base_name:>10} {'cpu/' + base_name:>9}"
    )
    for name, t in rows:
        print(
            f"  {name:<44} {t.best * 1000:8.1f} {t.median * 1000:10.1f} {t.cpu * 1000:8.1f} "
            f"{t.best / base.best:9.2f}x {t.cpu / base.cpu:8.2f}x"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--family", default="all", choices=[*SETUPS, "all"], help="which family (default all)")
    parser.add_argument("--batch", type=int, default=8, help="images per sampling call and per update")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"rewardflow family bench — {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved runs per row\n"
    )
    for name in SETUPS if args.family == "all" else [args.family]:
        sampling_overhead(name, SETUPS[name], args.batch, args.repeats)
        train_step_ratio(name, SETUPS[name], args.batch, args.repeats)


if __name__ == "__main__":
    main()
