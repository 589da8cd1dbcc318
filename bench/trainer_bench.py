"""Trainer benchmark, measured side by side in one run on this machine.

    .venv/bin/python bench/trainer_bench.py [--batch 16] [--steps 10] [--repeats 7] [--loop-epochs 10]

Sampling on the tiny random SD3 (docs/algorithm.md, "The embedded default"; 64x64), same components,
same prompt embeddings, same steps, same CFG (w 4.5), images decoded to uint8:
  (1) diffusers' own StableDiffusion3Pipeline (Euler ODE, no log-probs) — the floor;
  (2) our sampler at noise 0 (the ODE through our step function, per-step log-probs recorded);
  (3) our sampler as in training (Flow-SDE, noise 0.7, log-probs).
The overhead ratio is (2)/(1) and (3)/(1). A check runs first: (2) started from the pipeline's initial
noise must give the pipeline's images. Each row: best and median wall time and median CPU time over
`--repeats` interleaved runs after one warm-up each (on a shared machine the best wall time is the
least disturbed one).
  (4) the share of epoch time the loop blocks waiting for rewards, from a short embedded-default run
      (`rewardflow train` with tiny_jpeg: the jpeg service as a local process), or from --loop-metrics.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import StableDiffusion3Pipeline
from rewardflow_trainer.logging import read_metrics
from rewardflow_trainer.models.family import Guidance
from rewardflow_trainer.models.sd3 import SD3Family
from rewardflow_trainer.prompts import BUILTIN_PROMPT_SETS
from rewardflow_trainer.sampling import sample_trajectories


@dataclass
class Timing:
    """Wall-clock best and median, and process CPU time median, of one measured call."""

    best: float
    median: float
    cpu: float


def interleaved_timings(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    """Time each run; one warm-up each, then the runs alternate so load drift hits all alike.

    On a shared machine the best wall time is the least disturbed one; CPU time shows work done.
    """
    wall: dict[str, list[float]] = {name: [] for name in runs}
    cpu: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            run()
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    return {n: Timing(min(wall[n]), statistics.median(wall[n]), statistics.median(cpu[n])) for n in runs}


def sampling_overhead(batch: int, steps: int, repeats: int, guidance_scale: float) -> None:
    family = SD3Family.tiny(seed=0)
    prompts = [BUILTIN_PROMPT_SETS["tiny"][i % 8] for i in range(batch)]
    guidance = Guidance(scale=guidance_scale, cfg=True)
    embeds = family.encode(prompts)
    negative = family.negative_embeds(batch)
    pipe = StableDiffusion3Pipeline(**family.components())
    pipe.set_progress_bar_config(disable=True)

    def pipeline(latents: torch.Tensor | None = None, generator: torch.Generator | None = None) -> np.ndarray:
        out = pipe(
            prompt_embeds=embeds["prompt_embeds"],
            pooled_prompt_embeds=embeds["pooled_prompt_embeds"],
            negative_prompt_embeds=negative["prompt_embeds"],
            negative_pooled_prompt_embeds=negative["pooled_prompt_embeds"],
            num_inference_steps=steps,
            guidance_scale=guidance_scale,
            height=family.resolution,
            width=family.resolution,
            latents=latents,
            generator=generator,
            output_type="np",
        )
        return (np.asarray(out.images) * 255).round().astype(np.uint8)

    def ours(noise_level: float, generator: torch.Generator | None = None):
        return sample_trajectories(
            family,
            prompts,
            num_steps=steps,
            guidance=guidance,
            noise_level=noise_level,
            sde_type="sde" if noise_level > 0 else "ode",
            generator=generator,
        )

    # Same start, same path: our ODE must reproduce the pipeline's images.
    trajectory = ours(0.0, torch.Generator().manual_seed(0))
    reference = pipeline(latents=trajectory.latents[:, 0].clone())
    diff = np.abs(trajectory.images.astype(int) - reference.astype(int))
    pipeline_final = _pipeline_latents(pipe, trajectory.latents[:, 0], embeds, negative, steps, guidance_scale)
    latent_gap = float((trajectory.latents[:, -1] - pipeline_final).abs().max())
    print(
        f"check: our ODE vs the pipeline from the same noise: max |Δ| {diff.max()} / 255 per pixel "
        f"({(diff > 1).mean() * 100:.2f} % of values differ by > 1), final latents max |Δ| {latent_gap:.2e}"
    )

    generator = torch.Generator().manual_seed(1)
    timings = interleaved_timings(
        {
            "diffusers StableDiffusion3Pipeline (ODE)": lambda: pipeline(generator=generator),
            "ours, noise 0 (ODE) + log-probs": lambda: ours(0.0, generator),
            "ours, Flow-SDE noise 0.7 + log-probs": lambda: ours(0.7, generator),
        },
        repeats,
    )
    rows = list(timings.items())
    base = rows[0][1]
    print(f"\n(1-3) sampling {batch} images 64x64, {steps} steps, CFG w={guidance_scale}, decode to uint8")
    print(f"  {'':<42} {'best ms':>8} {'median ms':>10} {'cpu ms':>8} {'img/s':>7} {'best/pipe':>9} {'cpu/pipe':>8}")
    for name, t in rows:
        print(
            f"  {name:<42} {t.best * 1000:8.1f} {t.median * 1000:10.1f} {t.cpu * 1000:8.1f} {batch / t.best:7.1f} "
            f"{t.best / base.best:8.2f}x {t.cpu / base.cpu:7.2f}x"
        )
    sde, ode = rows[2][1], rows[1][1]
    print(
        f"  => overhead of sampling with log-probs (best wall): {sde.best / base.best:.2f}x the pipeline with the "
        f"SDE, {ode.best / base.best:.2f}x with the ODE\n"
    )


@torch.no_grad()
def _pipeline_latents(pipe, latents, embeds, negative, steps, guidance_scale) -> torch.Tensor:
    """The pipeline's final latents (before the VAE) from the given initial noise."""
    out = pipe(
        prompt_embeds=embeds["prompt_embeds"],
        pooled_prompt_embeds=embeds["pooled_prompt_embeds"],
        negative_prompt_embeds=negative["prompt_embeds"],
        negative_pooled_prompt_embeds=negative["pooled_prompt_embeds"],
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        latents=latents.clone(),
        output_type="latent",
    )
    return out.images.to(torch.float32)


def reward_wait_share(path: Path) -> None:
    """Share of epoch time the loop blocked on rewards, from a run's metrics.jsonl (time/* keys of loop.py)."""
    records = read_metrics(path)
    pairs = [
        (r.get("time/reward_wait_s", r.get("reward_wait_s")), r.get("time/epoch_s", r.get("epoch_s"))) for r in records
    ]
    pairs = [(wait, epoch) for wait, epoch in pairs if wait is not None and epoch]
    if not pairs:
        print(f"(4) reward wait: {path} has no time/reward_wait_s and time/epoch_s records")
        return
    wait, total = sum(w for w, _ in pairs), sum(e for _, e in pairs)
    worst = max(w / e for w, e in pairs)
    print(
        f"(4) time blocked waiting for rewards (jpeg service over HTTP, scored while sampling continues), "
        f"{len(pairs)} epochs of {path}:"
    )
    print(
        f"  {wait:.3f} s of {total:.2f} s = {wait / total * 100:.2f} % of epoch time (worst epoch {worst * 100:.2f} %)"
    )


def run_tiny_loop(epochs: int) -> Path:
    """A short embedded-default run (tiny_jpeg, local jpeg service) in a temp dir; returns its run dir."""
    out = Path(tempfile.mkdtemp(prefix="rewardflow-bench-"))
    command = [
        sys.executable,
        "-m",
        "rewardflow_trainer.cli",
        "--epochs",
        str(epochs),
        "--out",
        str(out),
        "run.eval_every=0",
        "run.save_every=0",
        "run.grid_every=0",
        "run.progress=false",
    ]
    print(f"(4) running: {' '.join(command[1:])}")
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=16, help="images per sampling call")
    parser.add_argument("--steps", type=int, default=10, help="denoising steps")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per row")
    parser.add_argument("--guidance", type=float, default=4.5, help="CFG weight")
    parser.add_argument("--loop-epochs", type=int, default=10, help="epochs of a tiny_jpeg run for (4); 0 skips it")
    parser.add_argument("--loop-metrics", type=Path, help="report (4) from this run dir instead of a new run")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"rewardflow trainer bench — {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.repeats} interleaved runs per row\n"
    )
    sampling_overhead(args.batch, args.steps, args.repeats, args.guidance)
    if args.loop_metrics is not None:
        reward_wait_share(args.loop_metrics)
    elif args.loop_epochs > 0:
        reward_wait_share(run_tiny_loop(args.loop_epochs))


if __name__ == "__main__":
    main()
