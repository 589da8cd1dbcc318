"""Every training algorithm on one clock: held-out accuracy (or reward) against training wall time, side by side.

    .venv/bin/python bench/algorithms_clock.py [--preset shapes_geneval] [--algorithms grpo grpo_fast dpo sft nft]
        [--seeds 0 1 2] [--epochs N] [--eval-every K] [--budget-s S] [--out runs/algorithms_clock] [key=value ...]

Each (algorithm, seed) is one `rewardflow train` process on the same preset (default shapes_geneval, whose
held-out GenEval accuracy is the measure; tiny_jpeg works too, measured by its held-out reward), with a
held-out evaluation every K epochs:

    grpo       Flow-GRPO, noise and training on every step (the preset's SDE window removed)
    grpo_fast  Flow-GRPO-Fast: CPS at noise 0.8 in an SDE window (the preset's, else 3 steps in (0, 5))
    dpo        Diffusion-DPO (--algorithm dpo), sft (--algorithm sft), nft (--algorithm nft)

The clock is the training wall time: the sum of the epochs' `time/epoch_s` up to each evaluation (sampling,
scoring and the update; evaluation excluded), so runs on a busy machine are compared on the work they did.
All runs get the same epochs; the comparison is cut at the same budget (--budget-s, default the shortest
run's training time): each run's measure at its last evaluation within the budget. Prints one table
(mean ± std over seeds per algorithm, and each run) and writes accuracy_vs_time.png and clock.json to --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rewardflow_trainer.logging import read_metrics
from rewardflow_trainer.presets import build_config

ALGORITHMS = ("grpo", "grpo_fast", "dpo", "sft", "nft")


def variant_args(name: str, preset: str, overrides: list[str]) -> list[str]:
    """The command-line arguments that turn the preset (with `overrides`) into algorithm `name`."""
    sample = build_config(preset, overrides).sample
    if name == "grpo":
        return ["--algorithm", "grpo", "sample.sde_window=null"]
    if name == "grpo_fast":
        window = sample.sde_window or (3, 0, min(5, sample.num_steps - 1))
        size, lo, hi = window
        return [
            "--algorithm",
            "grpo",
            "sample.sde_type=cps",
            "sample.noise_level=0.8",
            f"sample.sde_window={size},{lo},{hi}",
        ]
    if name in ("dpo", "sft", "nft"):
        return ["--algorithm", name]
    raise ValueError(f"algorithm {name!r}: expected one of {', '.join(ALGORITHMS)}")


def run(preset: str, name: str, seed: int, out: Path, epochs: int | None, eval_every: int, extra: list[str]) -> None:
    """One training run in its own process (a fresh interpreter: nothing shared between runs)."""
    command = [sys.executable, "-m", "rewardflow_trainer.cli", "--preset", preset, "--out", str(out)]
    command += ["--epochs", str(epochs)] if epochs else []
    command += variant_args(name, preset, extra)
    command += [f"run.seed={seed}", f"run.eval_every={eval_every}", "run.progress=false", "run.save_every=0", *extra]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def curve(out: Path) -> list[dict[str, float]]:
    """(epoch, training seconds, held-out measure, rollout reward) at every evaluation of one run (epoch 0 too)."""
    points, elapsed, reward = [], 0.0, float("nan")
    for record in read_metrics(out):
        elapsed += record.get("time/epoch_s", 0.0)
        reward = record.get("reward_mean", reward)
        measure = record.get("eval/accuracy", record.get("eval/reward_mean"))
        if measure is not None:
            points.append({"epoch": record["epoch"], "train_s": elapsed, "measure": measure, "reward": reward})
    return points


def at_budget(points: list[dict[str, float]], budget_s: float) -> dict[str, float]:
    """The last evaluation within the budget."""
    return [p for p in points if p["train_s"] <= budget_s + 1e-9][-1]


def _finite_mean(values: list[float]) -> float:
    """Mean of the finite values (a run cut at epoch 0 has no rollout reward yet), nan when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def table(curves: dict[str, dict[int, list[dict[str, float]]]], budget_s: float, measure: str) -> str:
    lines = [f"at {budget_s:.0f} s of training (evaluation excluded); {measure}, held-out", ""]
    lines.append(f"{'algorithm':<10} {'start':>7} {'at budget':>10} {'± seeds':>8} {'epochs':>7} {'reward':>8}")
    for name, runs in curves.items():
        start = np.mean([points[0]["measure"] for points in runs.values()])
        ends = [at_budget(points, budget_s) for points in runs.values()]
        values = [e["measure"] for e in ends]
        lines.append(
            f"{name:<10} {start:>7.3f} {np.mean(values):>10.3f} {np.std(values):>8.3f} "
            f"{np.mean([e['epoch'] for e in ends]):>7.1f} {_finite_mean([e['reward'] for e in ends]):>8.3f}"
        )
    lines += ["", "each run: algorithm seed: (epoch, train s, measure) at every evaluation"]
    for name, runs in curves.items():
        for seed, points in runs.items():
            shown = " ".join(f"({p['epoch']}, {p['train_s']:.0f}, {p['measure']:.3f})" for p in points)
            lines.append(f"  {name} {seed}: {shown}")
    return "\n".join(lines)


def plot(curves: dict[str, dict[int, list[dict[str, float]]]], budget_s: float, path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(8, 5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (name, runs) in zip(colors, curves.items(), strict=False):
        for i, points in enumerate(runs.values()):
            axis.plot(
                [p["train_s"] for p in points], [p["measure"] for p in points], marker="o", color=color,
                alpha=0.8, label=name if i == 0 else None,
            )  # fmt: skip
    axis.axvline(budget_s, color="gray", linestyle="--", linewidth=1)
    axis.set_xlabel("training wall time (s; evaluation excluded)")
    axis.set_ylabel("held-out measure")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shapes_geneval")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--budget-s", type=float, default=None, help="default: the shortest run's training time")
    parser.add_argument("--out", type=Path, default=Path("runs/algorithms_clock"))
    parser.add_argument("--reuse", action="store_true", help="read finished runs in --out instead of training")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="applied to every run")
    args = parser.parse_args(argv)
    curves: dict[str, dict[int, list[dict[str, float]]]] = {}
    for name in args.algorithms:
        for seed in args.seeds:
            out = args.out / name / f"seed{seed}"
            if not args.reuse:
                run(args.preset, name, seed, out, args.epochs, args.eval_every, args.overrides)
            curves.setdefault(name, {})[seed] = curve(out)
    budget = args.budget_s or min(points[-1]["train_s"] for runs in curves.values() for points in runs.values())
    has_accuracy = any(
        "eval/accuracy" in r for r in read_metrics(args.out / args.algorithms[0] / f"seed{args.seeds[0]}")
    )
    text = table(curves, budget, "strict GenEval accuracy" if has_accuracy else "reward")
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, budget, args.out / "accuracy_vs_time.png", f"{args.preset}: every algorithm on one clock")
    summary: dict[str, Any] = {"preset": args.preset, "budget_s": budget, "curves": curves}
    (args.out / "clock.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "table.txt").write_text(text + "\n")
    print(f"\nwrote {args.out / 'accuracy_vs_time.png'}, {args.out / 'clock.json'} and {args.out / 'table.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
