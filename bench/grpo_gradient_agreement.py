"""How much of a GRPO gradient is signal: the cosine between the policy gradients of independent rollouts.

    .venv/bin/python bench/grpo_gradient_agreement.py [--model DIR] [--prompts 8] [--group 8] [--batches 4]
                                                      [--window 3,0,6 | none] [--same-latent] [--steps 8]

For the same prompts, two independent sets of rollouts (A and B, `--batches` batches each of prompts x group
images) are drawn with the trainer's sampler (SDE at noise 0.7, CFG 4.5, the window), scored in process by
GenEval's rules with the exact shapes detector (the dense score the demo trains on), and turned into
group-normalized advantages and the GRPO loss gradient at ratio 1 over every trained step (docs/algorithm.md,
"The policy loss"). If the gradient were mostly signal, A's and B's would point the same way (cosine near 1);
pure noise gives a cosine near 0. Printed for the first k batches of each side, k = 1..batches, so the
agreement can be read against the number of rollouts behind one step; the noise floor is A's gradient
against the gradient of A's rollouts with their advantages shuffled.

This measured why GRPO on the shipped shapes model did not raise held-out accuracy in minutes (README, "The
shapes world"): at 64 rollouts per step the two gradients' cosine is about 0.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from rewardflow_geneval.shapes_detector import judge
from rewardflow_trainer.models import Guidance, load_family
from rewardflow_trainer.models.family import ModelFamily
from rewardflow_trainer.presets import SHAPES_MODEL
from rewardflow_trainer.sampling import (
    SdeWindow,
    Trajectory,
    group_latent_seeds,
    recompute_step,
    sample_trajectories,
    step_log_prob,
)


def rollouts(
    family: ModelFamily, entries: list[dict], args: argparse.Namespace, seed: int
) -> tuple[Trajectory, torch.Tensor]:
    """One batch of rollouts and its group-normalized advantages (groups of `args.group` in order)."""
    prompts = [e["prompt"] for e in entries]
    if args.mirrored:
        trajectory = mirrored_rollouts(family, prompts, args, seed)
        return trajectory, advantages_of(trajectory, entries, args.group)
    window = None if args.window == "none" else SdeWindow(*(int(v) for v in args.window.split(",")))
    seeds = group_latent_seeds(prompts, seed, 0) if args.same_latent else None
    trajectory = sample_trajectories(
        family, prompts, num_steps=args.steps, guidance=Guidance(scale=4.5), noise_level=0.7, window=window,
        generator=torch.Generator().manual_seed(seed), latent_seeds=seeds,
    )  # fmt: skip
    return trajectory, advantages_of(trajectory, entries, args.group)


def advantages_of(trajectory: Trajectory, entries: list[dict], group: int) -> torch.Tensor:
    """Dense GenEval scores of the rollouts' images, normalized within each group of `group` (global std)."""
    rewards = np.array([judge(image, e).score for image, e in zip(trajectory.images, entries, strict=True)])
    grouped = rewards.reshape(-1, group)
    advantages = (grouped - grouped.mean(axis=1, keepdims=True)) / (rewards.std() + 1e-6)
    return torch.tensor(advantages.reshape(-1), dtype=torch.float32)


@torch.no_grad()
def mirrored_rollouts(family: ModelFamily, prompts: list[str], args: argparse.Namespace, seed: int) -> Trajectory:
    """Antithetic rollouts: one latent per group, ODE steps but one noisy step j drawn in [0, 2], and in each group
    the second half's noise at j is minus the first half's (x_{j+1} = 2 mean - x'_{j+1}); log-probs rescored."""
    generator = torch.Generator().manual_seed(seed)
    batch, guidance = len(prompts), Guidance(scale=4.5)
    embeds = family.encode(prompts)
    sigmas = family.sigmas(args.steps).to(torch.float32).unsqueeze(0).repeat(batch, 1)
    latents = family.initial_latents(batch, seeds=group_latent_seeds(prompts, seed, 0))
    noisy = int(torch.randint(3, (1,), generator=generator))
    levels = torch.zeros(batch, args.steps)
    levels[:, noisy] = 0.7
    all_latents, log_probs = [latents], []
    for j in range(args.steps):
        out = step_log_prob(family, latents, None, sigmas, j, embeds, guidance, sde_type="sde",
                            noise_level=levels[:, j], generator=generator)  # fmt: skip
        nxt = out.next_latents
        if j == noisy:
            half = args.group // 2
            grouped, mean = nxt.view(-1, args.group, *nxt.shape[1:]), out.mean.view(-1, args.group, *nxt.shape[1:])
            grouped[:, half:] = 2 * mean[:, half:] - grouped[:, :half]
            nxt = grouped.reshape(nxt.shape)
            out = step_log_prob(family, latents, nxt, sigmas, j, embeds, guidance, sde_type="sde",
                                noise_level=levels[:, j])  # fmt: skip
        latents = nxt
        all_latents.append(latents)
        log_probs.append(out.log_prob)
    return Trajectory(
        prompts=list(prompts), latents=torch.stack(all_latents, dim=1), log_probs=torch.stack(log_probs, dim=1),
        sigmas=sigmas, timesteps=sigmas[:, :-1] * family.num_train_timesteps, noise_levels=levels,
        train_steps=torch.full((batch, 1), noisy, dtype=torch.int64), embeds=embeds, images=family.decode(latents),
        sde_type="sde",
    )  # fmt: skip


def gradient(family: ModelFamily, trajectory: Trajectory, advantages: torch.Tensor) -> torch.Tensor:
    """The flattened gradient of the GRPO loss -mean(A * ratio) at ratio 1, summed over the trained steps."""
    params = [p for p in family.transformer.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    for j in range(trajectory.train_steps.shape[1]):
        step = trajectory.train_steps[:, j]
        out = recompute_step(family, trajectory, step, Guidance(scale=4.5))
        old = trajectory.log_probs.gather(1, step[:, None])[:, 0]
        (-(advantages * torch.exp(out.log_prob - old)).mean()).backward()
    return torch.cat([p.grad.flatten() for p in params]).clone()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=SHAPES_MODEL)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--window", default="3,0,6", help="size,lo,hi of the SDE window, or none (every step)")
    parser.add_argument("--same-latent", action="store_true")
    parser.add_argument(
        "--mirrored", action="store_true", help="antithetic noise pairs, one noisy step in [0, 2] (implies same latent)"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    train = [json.loads(line) for line in (args.model / "prompts" / "train_metadata.jsonl").open()]
    picked = [train[i] for i in np.random.default_rng(0).choice(len(train), args.prompts, replace=False)]
    entries = [e for e in picked for _ in range(args.group)]
    family = load_family("sd3", args.model, resolution=64)
    started = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    how = "mirrored, one noisy step" if args.mirrored else f"window {args.window}, same_latent {args.same_latent}"
    print(f"{args.prompts} prompts x {args.group} images a batch, {how}")
    for k in range(1, args.batches + 1):
        for side, offset in (("A", 0), ("B", 1000)):
            trajectory, advantages = rollouts(family, entries, args, seed=offset + k)
            sums[side] = sums.get(side, 0) + gradient(family, trajectory, advantages)
            if side == "A":
                shuffled = advantages[torch.randperm(len(advantages), generator=torch.Generator().manual_seed(k))]
                sums["A shuffled"] = sums.get("A shuffled", 0) + gradient(family, trajectory, shuffled)
        rollouts_per_side = k * len(entries)
        print(
            f"{rollouts_per_side:5d} rollouts a side: cos(A, B) = {cosine(sums['A'], sums['B']):+.3f}   "
            f"noise floor cos(A, A shuffled) = {cosine(sums['A'], sums['A shuffled']):+.3f}   "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
