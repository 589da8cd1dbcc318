"""Held-out evaluation during training: the noise-0 ODE with the EMA weights on the eval prompts, several images
per prompt, written in GenEval's folder layout; with a geneval reward, GenEval's per-tag report and accuracy.

An evaluation folder (`<run>/eval/start`, `<run>/eval/end`) holds `<index>/metadata.jsonl` and
`<index>/samples/NNNN.png` per prompt (GenEval's layout, so its own scripts read it) and, when the
rewards include the geneval service, `results.jsonl`, `summary.json` and `summary.md` as
`rewardflow eval geneval` writes them.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from accelerate.utils import gather_object
from PIL import Image

from rewardflow_trainer.agreement import scored_together
from rewardflow_trainer.eval_geneval import ImageResult, summarize, summary_markdown
from rewardflow_trainer.prompts import eval_batches
from rewardflow_trainer.sampling import group_latent_seeds, sample_eval

if TYPE_CHECKING:
    from rewardflow_trainer.loop import Run, RunState

GENEVAL = "geneval"


@dataclass
class EvalResult:
    """Every eval image of every rank, in (prompt, sample) order."""

    prompt_ids: list[int] = field(default_factory=list)
    sample_ids: list[int] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)  # {"prompt": ..., **metadata}
    images: list[np.ndarray] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    geneval: list[dict[str, Any] | None] = field(default_factory=list)  # strict, score, details per image

    @property
    def prompts(self) -> list[str]:
        return [entry["prompt"] for entry in self.entries]

    def has_geneval(self) -> bool:
        return bool(self.geneval) and all(g is not None for g in self.geneval)

    def accuracy(self) -> float | None:
        """GenEval's strict accuracy over images (None without a geneval reward)."""
        return float(np.mean([g["strict"] for g in self.geneval])) if self.has_geneval() else None

    def accuracy_per_sample(self) -> list[float]:
        """The strict accuracy of each sample index k (one eval seed each): its spread is the eval noise."""
        if not self.has_geneval():
            return []
        per_k: dict[int, list[float]] = {}
        for k, g in zip(self.sample_ids, self.geneval, strict=True):
            per_k.setdefault(k, []).append(g["strict"])
        return [float(np.mean(per_k[k])) for k in sorted(per_k)]

    def first_samples(self, limit: int) -> EvalResult:
        """Sample 0 of the first `limit` prompts (for the before/after grid)."""
        rows = [i for i, k in enumerate(self.sample_ids) if k == 0][:limit]
        pick = lambda values: [values[i] for i in rows]  # noqa: E731
        return EvalResult(
            pick(self.prompt_ids),
            pick(self.sample_ids),
            pick(self.entries),
            pick(self.images),
            pick(self.rewards),
            pick(self.geneval) if self.geneval else [],
        )


def evaluate(run: Run, state: RunState) -> EvalResult:
    """Noise-0 ODE with the eval step count and the EMA weights, `eval_images_per_prompt` seeds per prompt; every
    rank's share, scored (a scoring failure on any rank stops every rank: agreement.py), then gathered."""
    rows = scored_together(run.acc, lambda: local_rows(run, state))
    rows = sorted(gather_object(rows), key=lambda r: (r[0], r[1]))
    return EvalResult(*(list(column) for column in zip(*rows, strict=True)))


def local_rows(run: Run, state: RunState) -> list[tuple[int, int, dict[str, Any], np.ndarray, float, Any]]:
    """This rank's eval images with their scores: (prompt id, seed index, entry, image, reward, geneval)."""
    c, acc = run.config, run.acc
    mine = eval_batches(run.eval_prompts, c.sample.eval_batch_size, acc.num_processes, acc.process_index,
                        c.prompts.eval_limit)  # fmt: skip
    rows: list[tuple[int, int, dict[str, Any], np.ndarray, float, dict[str, Any] | None]] = []
    with torch.no_grad(), acc.autocast(), state.ema.swapped_in() if state.ema is not None else nullcontext():
        for batch in mine:
            for k in range(c.prompts.eval_images_per_prompt):
                seeds = group_latent_seeds(batch.prompts, k, c.run.seed)  # the same noise at every eval
                trajectory = sample_eval(
                    run.family, batch.prompts, num_steps=c.sample.eval_num_steps, guidance=run.guidance,
                    latent_seeds=seeds,
                )  # fmt: skip
                reply = run.scorer.score(trajectory.images, batch.prompts, batch.metadata)
                for i, prompt_id in enumerate(batch.prompt_ids):
                    entry = {"prompt": batch.prompts[i], **batch.metadata[i]}
                    image, reward = trajectory.images[i], float(reply.total[i])
                    rows.append((prompt_id, k, entry, image, reward, _geneval_of(reply, i)))
    return rows


def _geneval_of(reply: Any, i: int) -> dict[str, Any] | None:
    """The geneval service's strict verdict, dense score and details for image i, if it scored it."""
    scores = reply.scores.get(GENEVAL)
    if scores is None or "strict" not in scores or not np.isfinite(scores["strict"][i]):
        return None
    details = reply.details.get(GENEVAL, [None] * (i + 1))[i]
    return {"strict": float(scores["strict"][i]), "score": float(scores["score"][i]), "details": details}


def write_eval(folder: Path, result: EvalResult, title: str) -> dict[str, Any] | None:
    """GenEval's image layout for every prompt; with geneval scores also its results and per-tag report."""
    for prompt_id, k, entry, image in zip(result.prompt_ids, result.sample_ids, result.entries, result.images,
                                          strict=True):  # fmt: skip
        prompt_folder = folder / f"{prompt_id:05d}"
        (prompt_folder / "samples").mkdir(parents=True, exist_ok=True)
        (prompt_folder / "metadata.jsonl").write_text(json.dumps(entry) + "\n")
        Image.fromarray(image).save(prompt_folder / "samples" / f"{k:04d}.png")
    if not result.has_geneval():
        return None
    images = [_image_result(p, k, entry, g) for p, k, entry, g in
              zip(result.prompt_ids, result.sample_ids, result.entries, result.geneval, strict=True)]  # fmt: skip
    records = [r.record(f"{r.prompt_index:05d}/samples/{r.sample_index:04d}.png") for r in images]
    (folder / "results.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    summary = summarize(images)
    summary["accuracy_per_sample"] = result.accuracy_per_sample()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (folder / "summary.md").write_text(summary_markdown(summary, title))
    return summary


def _image_result(prompt_id: int, k: int, entry: dict[str, Any], geneval: dict[str, Any]) -> ImageResult:
    reason = "\n".join((geneval["details"] or {}).get("failed", []))
    return ImageResult(prompt_id, k, entry, geneval["strict"] == 1.0, geneval["score"], reason, geneval["details"])


def eval_metrics(result: EvalResult) -> dict[str, float]:
    """What an evaluation adds to the epoch's metrics."""
    metrics = {"eval/reward_mean": float(np.mean(result.rewards))}
    if result.has_geneval():
        per_sample = result.accuracy_per_sample()
        metrics["eval/accuracy"] = float(result.accuracy())
        metrics["eval/accuracy_seed_std"] = float(np.std(per_sample))
        metrics["eval/geneval_score"] = float(np.mean([g["score"] for g in result.geneval]))
    return metrics
