"""Held-out accuracy against wall-clock time for the embedded default, several training seeds side by side.

    .venv/bin/python bench/demo_clock.py [--seeds 0 1 2] [--epochs N] [--eval-every K] [--out runs/demo_clock]
                                         [--preset NAME] [key=value ...]

Each seed runs `rewardflow train` (the preset, default: the embedded default) in its own process, with a
held-out evaluation every K epochs. The clock is the training wall time: the sum of the epochs'
`time/epoch_s` up to each evaluation (sampling, scoring and the update; evaluation itself excluded), so
runs on a busy machine are compared on the work they did. Prints, per seed, the strict GenEval accuracy
(share of correct held-out images) at each evaluation and the start -> end per tag from summary.json;
writes accuracy_vs_time.png and clock.json into --out. This is the clock on which the algorithms
issue compares every algorithm.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from rewardflow_trainer.logging import read_metrics
from rewardflow_trainer.presets import DEFAULT_PRESET


def run_seed(preset: str, seed: int, out: Path, epochs: int | None, eval_every: int, overrides: list[str]) -> None:
    """One training run in its own process (a fresh interpreter: no state shared between seeds)."""
    command = [sys.executable, "-m", "rewardflow_trainer.cli", "--preset", preset, "--out", str(out)]
    command += ["--epochs", str(epochs)] if epochs else []
    command += [f"run.seed={seed}", f"run.eval_every={eval_every}", "run.progress=false", *overrides]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def clock(out: Path) -> list[dict[str, float]]:
    """(training seconds, epoch, accuracy, dense score) at every evaluation of one run."""
    points, elapsed = [], 0.0
    for record in read_metrics(out):
        elapsed += record.get("time/epoch_s", 0.0)
        if "eval/accuracy" in record:
            points.append(
                {
                    "epoch": record["epoch"],
                    "train_s": elapsed,
                    "accuracy": record["eval/accuracy"],
                    "seed_std": record.get("eval/accuracy_seed_std", 0.0),
                    "geneval_score": record.get("eval/geneval_score", float("nan")),
                }
            )
    return points


def plot(curves: dict[int, list[dict[str, float]]], path: Path, title: str) -> None:
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for seed, points in curves.items():
        axis.plot([p["train_s"] for p in points], [p["accuracy"] for p in points], marker="o", label=f"seed {seed}")
    axis.set_xlabel("training wall time (s; evaluation excluded)")
    axis.set_ylabel("held-out strict GenEval accuracy")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default=DEFAULT_PRESET)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/demo_clock"))
    parser.add_argument("--reuse", action="store_true", help="read finished runs in --out instead of training")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)
    curves: dict[int, list[dict[str, float]]] = {}
    summaries: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:
        out = args.out / f"seed{seed}"
        if not args.reuse:
            run_seed(args.preset, seed, out, args.epochs, args.eval_every, args.overrides)
        curves[seed] = clock(out)
        summaries[seed] = json.loads((out / "summary.json").read_text())
    print(f"\n{'seed':>4} {'epoch':>5} {'train s':>8} {'accuracy':>8} {'± seeds':>8} {'dense':>7}")
    for seed, points in curves.items():
        for p in points:
            print(f"{seed:>4} {p['epoch']:>5} {p['train_s']:>8.0f} {p['accuracy']:>8.3f} {p['seed_std']:>8.3f} "
                  f"{p['geneval_score']:>7.3f}")  # fmt: skip
    print("\nstart -> end, strict accuracy per tag (held-out):")
    for seed, summary in summaries.items():
        start, end = summary.get("eval_tags_start", {}), summary.get("eval_tags_end", {})
        tags = ", ".join(f"{t} {start[t]:.2f}->{end.get(t, float('nan')):.2f}" for t in start)
        start_acc, end_acc = summary.get("eval_accuracy_start", float("nan")), summary.get("eval_accuracy_end")
        print(f"  seed {seed}: {start_acc:.3f} -> {end_acc:.3f} in {summary['wall_s']:.0f} s ({tags})")
    args.out.mkdir(parents=True, exist_ok=True)
    plot(curves, args.out / "accuracy_vs_time.png", f"{args.preset}: held-out accuracy vs training time")
    (args.out / "clock.json").write_text(json.dumps({"curves": curves, "summaries": summaries}, indent=2) + "\n")
    print(f"\nwrote {args.out / 'accuracy_vs_time.png'} and {args.out / 'clock.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
