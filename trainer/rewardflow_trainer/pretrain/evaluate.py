"""Held-out strict GenEval accuracy of a shapes model, per tag, through both samplers, judged exactly.

Samplers: "family" (SD3Family.from_pretrained + sampling.sample_eval, the trainer's ODE) and "pipeline"
(diffusers' StableDiffusion3Pipeline.from_pretrained). Both start from the same per-image seeds, so they
should agree image for image. "vae" judges the VAE's reconstructions of fresh renders instead (an upper
bound for any transformer). The judge is rewardflow_geneval.shapes_detector.judge (GenEval's rules).
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from rewardflow_trainer.models import Guidance, load_family
from rewardflow_trainer.pretrain.data import SPLIT_FILES, to_pixels
from rewardflow_trainer.pretrain.run import PROMPTS_DIR
from rewardflow_trainer.sampling import sample_eval

RESOLUTION = 64
SAMPLERS = ("family", "pipeline", "vae")


@dataclass(frozen=True)
class Setting:
    sampler: str
    guidance: float
    steps: int
    shift: float

    def label(self) -> str:
        if self.sampler == "vae":
            return "vae reconstruction"
        return f"{self.sampler} cfg {self.guidance:g} steps {self.steps} shift {self.shift:g}"


def read_split(folder: Path, split: str) -> list[dict[str, Any]]:
    """The model folder's prompts/{train,test}_metadata.jsonl."""
    path = folder / PROMPTS_DIR / SPLIT_FILES[split]
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; expected a folder written by `pretrain shapes`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def image_seeds(n_entries: int, samples: int, seed: int) -> list[int]:
    """One seed per image: sample j of entry i gets seed + j * n_entries + i (entries vary fastest)."""
    return [seed + j * n_entries + i for j in range(samples) for i in range(n_entries)]


class Samplers:
    """The model loaded once per sampler; `images(setting, prompts, seeds)` -> uint8 (B, 64, 64, 3)."""

    def __init__(self, folder: Path, batch: int = 64) -> None:
        self.folder, self.batch = folder, batch
        self._family: Any = None
        self._pipeline: Any = None

    def family(self, shift: float) -> Any:
        if self._family is None:
            self._family = load_family("sd3", self.folder, dtype=torch.float32, device="cpu", resolution=RESOLUTION)
        self._family.scheduler = FlowMatchEulerDiscreteScheduler.from_config(self._family.scheduler.config, shift=shift)
        return self._family

    def pipeline(self, shift: float) -> Any:
        from diffusers import StableDiffusion3Pipeline

        if self._pipeline is None:
            self._pipeline = StableDiffusion3Pipeline.from_pretrained(str(self.folder), dtype=torch.float32)
            self._pipeline.set_progress_bar_config(disable=True)
        pipe = self._pipeline
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=shift)
        return pipe

    @torch.no_grad()
    def images(self, setting: Setting, entries: Sequence[dict[str, Any]], seeds: Sequence[int]) -> np.ndarray:
        chunks = []
        for start in range(0, len(entries), self.batch):
            part, part_seeds = entries[start : start + self.batch], seeds[start : start + self.batch]
            chunks.append(self._chunk(setting, part, part_seeds))
        return np.concatenate(chunks)

    def _chunk(self, setting: Setting, entries: Sequence[dict[str, Any]], seeds: Sequence[int]) -> np.ndarray:
        prompts = [e["prompt"] for e in entries]
        if setting.sampler == "family":
            family = self.family(setting.shift)
            guidance = Guidance(scale=setting.guidance, cfg=setting.guidance != 1.0)
            return sample_eval(family, prompts, num_steps=setting.steps, guidance=guidance, latent_seeds=seeds).images
        if setting.sampler == "pipeline":
            pipe = self.pipeline(setting.shift)
            output = pipe(
                prompt=prompts,
                num_inference_steps=setting.steps,
                guidance_scale=setting.guidance,
                height=RESOLUTION,
                width=RESOLUTION,
                max_sequence_length=pipe.tokenizer_3.model_max_length,  # the 16 T5 tokens it was trained on
                generator=[torch.Generator().manual_seed(int(s)) for s in seeds],
                output_type="np",
            )
            return (np.asarray(output.images) * 255).round().astype(np.uint8)
        if setting.sampler == "vae":
            return self._reconstructions(entries, seeds)
        raise ValueError(f"sampler {setting.sampler!r}: expected one of {', '.join(SAMPLERS)}")

    def _reconstructions(self, entries: Sequence[dict[str, Any]], seeds: Sequence[int]) -> np.ndarray:
        from rewardflow_geneval.shapes import render

        vae = self.family(1.0).vae
        renders = np.stack([render(e, np.random.default_rng(int(s))) for e, s in zip(entries, seeds, strict=True)])
        decoded = vae.decode(vae.encode(to_pixels(renders)).latent_dist.mode()).sample
        return ((decoded * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


def accuracy(images: np.ndarray, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Strict accuracy and mean dense score per tag and overall (tags weighted equally, GenEval's overall)."""
    from rewardflow_geneval.shapes_detector import ShapesDetector, judge

    detector = ShapesDetector()
    strict, dense, by_prompt = defaultdict(list), defaultdict(list), defaultdict(list)
    for image, entry in zip(images, entries, strict=True):
        verdict = judge(image, entry, detector)
        strict[entry["tag"]].append(float(verdict.strict))
        dense[entry["tag"]].append(verdict.score)
        by_prompt[entry["prompt"]].append(verdict.score)
    tags = {
        tag: {"strict": float(np.mean(v)), "dense": float(np.mean(dense[tag])), "n": len(v)}
        for tag, v in strict.items()
    }
    return {
        "overall": float(np.mean([t["strict"] for t in tags.values()])),
        "images_strict": float(np.mean([s for v in strict.values() for s in v])),
        "dense": float(np.mean([s for v in dense.values() for s in v])),
        # GRPO learns only from prompts whose samples score differently: the share of such prompts
        "mixed_prompts": float(np.mean([np.ptp(scores) > 0 for scores in by_prompt.values()])),
        "tags": tags,
    }


def evaluate(
    folder: Path,
    settings: Sequence[Setting],
    *,
    split: str = "test",
    samples: int = 16,
    seed: int = 0,
    keep_images: bool = False,
) -> list[dict[str, Any]]:
    """One result per setting: the setting, overall and per-tag accuracy (and the images if asked)."""
    entries = read_split(folder, split)
    seeds = image_seeds(len(entries), samples, seed)
    repeated = [entries[i % len(entries)] for i in range(len(seeds))]
    samplers = Samplers(folder)
    results = []
    for setting in settings:
        images = samplers.images(setting, repeated, seeds)
        result = {"setting": setting.__dict__, "label": setting.label(), "split": split, **accuracy(images, repeated)}
        if keep_images:
            result["images"] = images
        results.append(result)
    return results


def settings_grid(
    samplers: Sequence[str], guidances: Sequence[float], steps: Sequence[int], shifts: Sequence[float]
) -> list[Setting]:
    out = []
    for sampler in samplers:
        if sampler == "vae":
            out.append(Setting("vae", 0.0, 0, 0.0))
            continue
        out += [Setting(sampler, g, n, s) for g, n, s in itertools.product(guidances, steps, shifts)]
    return out


def table(results: Sequence[dict[str, Any]]) -> str:
    """A Markdown table per setting: overall and per-tag strict accuracy (%), mean dense score, mixed prompts (%)."""
    tags = list(dict.fromkeys(tag for r in results for tag in r["tags"]))
    lines = [
        "| setting | overall | " + " | ".join(tags) + " | dense | mixed prompts |",
        "|---|---:|" + "---:|" * (len(tags) + 2),
    ]
    for r in results:
        cells = [f"{100 * r['tags'][t]['strict']:.0f}" if t in r["tags"] else "" for t in tags]
        tail = f" | {r['dense']:.3f} | {100 * r['mixed_prompts']:.0f} |"
        lines.append(f"| {r['label']} | {100 * r['overall']:.1f} | " + " | ".join(cells) + tail)
    return "\n".join(lines)


def save_grid(result: dict[str, Any], folder: Path, split: str, path: Path, per_prompt: int = 4) -> Path:
    """A captioned grid of the first `per_prompt` images of every prompt, with their strict verdicts."""
    from rewardflow_geneval.shapes_detector import judge

    from rewardflow_trainer.plots import image_grid, save_image

    entries = read_split(folder, split)
    n = len(entries)
    picks = [j * n + i for i in range(n) for j in range(per_prompt)]
    images = [result["images"][k] for k in picks]
    captions = [
        f"{'PASS' if judge(image, entries[k % n]).strict else 'fail'}: {entries[k % n]['prompt']}"
        for image, k in zip(images, picks, strict=True)
    ]
    grid = image_grid(images, captions, columns=per_prompt * 3, cell=128, title=result["label"], caption_lines=3)
    return save_image(grid, path)
