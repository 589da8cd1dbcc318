"""What a run leaves behind besides checkpoints: the reward curve, the before/after grid, summary.json, and
the per-rank advantage dumps that the distributed test reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rewardflow_trainer import plots

if TYPE_CHECKING:
    from rewardflow_trainer.evaluation import EvalResult
    from rewardflow_trainer.loop import Advantages, Rollout


@dataclass
class RunResult:
    """What a finished run reports: the training reward at its start and end, and where things are."""

    out_dir: Path
    reward_start: float
    reward_end: float
    wall_s: float

    @property
    def summary(self) -> str:
        change = 100.0 * (self.reward_end - self.reward_start) / max(abs(self.reward_start), 1e-12)
        return f"reward start {self.reward_start:.4g} → end {self.reward_end:.4g} ({change:+.1f}%)"


def finish(
    out: Path, records: list[dict], after: EvalResult | None, before_path: Path, wall_s: float, is_main: bool
) -> RunResult:
    """Reward curve, before/after grid and summary.json (main process); the start/end training rewards."""
    rewards = [r["reward_mean"] for r in records if "reward_mean" in r]
    window = max(1, min(10, len(rewards) // 5))
    start = float(np.mean(rewards[:window])) if rewards else float("nan")
    end = float(np.mean(rewards[-window:])) if rewards else float("nan")
    result = RunResult(out, start, end, wall_s)
    if not is_main or not rewards:
        return result
    plots.reward_curve(records, out / "reward_curve.png", window=window, subtitle=result.summary)
    if after is not None and before_path.exists():
        before = np.load(before_path)
        shown = after.first_samples(len(before["images"]))
        grid = plots.before_after_grid(
            shown.prompts,
            list(before["images"]),
            shown.images,
            before["rewards"].tolist(),
            shown.rewards,
            labels=("before", "after"),
        )
        plots.save_image(grid, out / "before_after.png")
    summary = {
        "reward_start": start,
        "reward_end": end,
        "summary": result.summary,
        "wall_s": wall_s,
        "epochs_averaged": window,
        **eval_accuracies(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def dump_advantages(directory: Path, epoch: int, rank: int, rollout: Rollout, advantages: Advantages) -> None:
    """Per-rank record of what went into the advantages (the distributed test checks that groups span ranks)."""
    data: dict[str, Any] = {
        "prompts": list(rollout.samples.prompts),
        "rewards": rollout.local_rewards["reward"].tolist(),
        "advantages": advantages.local.tolist(),
        "all_prompts": list(advantages.all_prompts),
        "all_rewards": advantages.gathered["reward"].tolist(),
        "all_advantages": advantages.all_advantages.tolist(),
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"epoch{epoch:04d}-rank{rank}.json").write_text(json.dumps({"epoch": epoch, "rank": rank, **data}))


def eval_accuracies(out: Path) -> dict[str, Any]:
    """GenEval's strict held-out accuracy at the start and the end (share of correct images, per eval seed
    too, and per tag), from eval/start and eval/end; {} when the run had no geneval reward."""
    found: dict[str, Any] = {}
    for name in ("start", "end"):
        path = out / "eval" / name / "summary.json"
        if path.is_file():
            summary = json.loads(path.read_text())
            found[f"eval_accuracy_{name}"] = summary["correct_images"]
            found[f"eval_accuracy_{name}_per_seed"] = summary["accuracy_per_sample"]
            found[f"eval_tags_{name}"] = {tag: v["accuracy"] for tag, v in summary["tags"].items()}
    return found
