"""`rewardflow eval geneval`: the GenEval benchmark for a model (and a LoRA), scored by the geneval service.

Images come from the trainer's own sampler with noise 0 (the ODE, `sample_eval`), 4 per prompt and
40 steps by default; they are scored by the geneval reward service (`geneval_strict`: GenEval's
verdict); the report follows GenEval's `summary_scores.py`: per-tag accuracy over images, the
overall score as the mean of the tag accuracies, plus the share of correct images and of prompts
with at least one correct image. Written to --out:
- summary.md, summary.json  the table (markdown) and the same figures (JSON)
- results.jsonl             one line per image in GenEval's results format (+ `score`, docs/geneval.md's dense reward)
- failures.png              failed images with the reason under each
- images/NNNNN/             GenEval's image layout (metadata.jsonl + samples/NNNN.png) unless --no-images
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from rewardflow_kit.stack import StackError
from rewardflow_proto.client import RewardServiceError

from rewardflow_trainer.config import ConfigError
from rewardflow_trainer.hub_models import check_pretrained
from rewardflow_trainer.lora import LORA_WEIGHTS_NAME
from rewardflow_trainer.models import Guidance, load_family
from rewardflow_trainer.plots import image_grid, save_image
from rewardflow_trainer.prompts import load_prompts
from rewardflow_trainer.rewards import RewardScorer
from rewardflow_trainer.sampling import sample_eval

TAG_ORDER = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""GenEval's tags in the order its paper's table lists them (others follow in order of appearance)."""
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ImageResult:
    """One generated image and its verdict."""

    prompt_index: int
    sample_index: int
    entry: dict[str, Any]
    correct: bool
    score: float
    reason: str
    details: dict[str, Any] | None
    image: np.ndarray | None = None

    def record(self, filename: str) -> dict[str, Any]:
        """A line of GenEval's results.jsonl (filename, tag, prompt, correct, reason, metadata, details) + score."""
        detected = (self.details or {}).get("objects", [])
        boxes: dict[str, list[list[float]]] = {}
        for obj in detected:
            boxes.setdefault(obj["class"], []).append([*obj["box"], obj["score"]])
        return {
            "filename": filename,
            "tag": self.entry["tag"],
            "prompt": self.entry["prompt"],
            "correct": self.correct,
            "reason": self.reason,
            "metadata": json.dumps(self.entry),
            "details": json.dumps(boxes),
            "score": self.score,
        }


def read_entries(path: Path, limit: int | None) -> list[dict[str, Any]]:
    """GenEval evaluation metadata (evaluation_metadata.jsonl), each entry with its prompt, in file order."""
    entries = [{"prompt": p.text, **p.metadata} for p in load_prompts(str(path))]
    for number, entry in enumerate(entries, start=1):
        if "tag" not in entry:
            raise ValueError(f"{path}: entry {number} has no 'tag' (GenEval's metadata format)")
    return entries[:limit] if limit else entries


def summarize(results: Sequence[ImageResult]) -> dict[str, Any]:
    """GenEval's summary: per-tag accuracy over images, overall = mean over tags, correct images and prompts."""
    tags: dict[str, list[bool]] = {}
    prompts: dict[int, bool] = {}
    for r in results:
        tags.setdefault(r.entry["tag"], []).append(r.correct)
        prompts[r.prompt_index] = prompts.get(r.prompt_index, False) or r.correct
    order = [t for t in TAG_ORDER if t in tags] + [t for t in tags if t not in TAG_ORDER]
    per_tag = {
        t: {"accuracy": sum(tags[t]) / len(tags[t]), "correct": sum(tags[t]), "images": len(tags[t])} for t in order
    }
    return {
        "overall": float(np.mean([v["accuracy"] for v in per_tag.values()])) if per_tag else 0.0,
        "tags": per_tag,
        "images": len(results),
        "prompts": len(prompts),
        "correct_images": sum(r.correct for r in results) / len(results) if results else 0.0,
        "correct_prompts": sum(prompts.values()) / len(prompts) if prompts else 0.0,
        "mean_score": float(np.mean([r.score for r in results])) if results else 0.0,
    }


def summary_markdown(summary: dict[str, Any], title: str) -> str:
    """The summary as markdown: GenEval's task breakdown as a table, then its overall line."""
    lines = [f"# GenEval: {title}", "", "| task | accuracy | correct / images |", "|---|---:|---:|"]
    for tag, v in summary["tags"].items():
        lines.append(f"| {tag} | {v['accuracy']:.2%} | {v['correct']} / {v['images']} |")
    lines += [
        "",
        f"Overall score (avg. over tasks): {summary['overall']:.5f}",
        "",
        f"Total images: {summary['images']}  ",
        f"Total prompts: {summary['prompts']}  ",
        f"% correct images: {summary['correct_images']:.2%}  ",
        f"% correct prompts: {summary['correct_prompts']:.2%}  ",
        f"Mean dense score (geneval `score`): {summary['mean_score']:.4f}",
    ]
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewardflow eval geneval", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="'tiny' (random test model), a Hugging Face id or a local checkpoint")
    p.add_argument("--family", default="sd3", help="model family (default sd3)")
    p.add_argument("--lora", type=Path, default=None, help="LoRA folder (pytorch_lora_weights.safetensors) or a "
                   "full transformer folder (config.json), e.g. a checkpoint's diffusers/ export")  # fmt: skip
    p.add_argument("--metadata", type=Path, required=True, help="GenEval evaluation_metadata.jsonl (or ours)")
    p.add_argument("--images-per-prompt", type=int, default=4, help="images per prompt (default 4)")
    p.add_argument("--steps", type=int, default=40, help="ODE sampling steps (default 40)")
    p.add_argument("--guidance", type=float, default=4.5, help="classifier-free guidance scale (default 4.5)")
    p.add_argument("--resolution", type=int, default=None, help="image size (default: the model's; tiny: 64)")
    p.add_argument("--batch-size", type=int, default=8, help="images per sampling batch (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initial noise (default 0)")
    p.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    p.add_argument("--url", action="append", default=[], help="geneval service URL (repeat for replicas); default: "
                   "the running local stack's, else a stack started for this run")  # fmt: skip
    p.add_argument("--api-key", default=None, help="bearer token for the service")
    p.add_argument("--detector", choices=("mask2former", "shapes"), default="mask2former",
                   help="detector of a geneval service started here: GenEval's Mask2Former, or the exact detector "
                   "of the shapes world (the embedded default's model)")  # fmt: skip
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per scoring request (default 300)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="device for the model")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="weights dtype (default fp16 on CUDA)")
    p.add_argument("--max-failures", type=int, default=32, help="failed images in failures.png (default 32)")
    p.add_argument("--no-images", action="store_true", help="do not save the images in GenEval's folder layout")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--debug", action="store_true", help="on an input or service error, raise it with its traceback")
    return p


def load_model(args: argparse.Namespace) -> Any:
    """The family with `--lora` applied (a LoRA adapter, or a fully fine-tuned transformer folder)."""
    dtype = (
        DTYPES[args.dtype] if args.dtype else (torch.float16 if str(args.device).startswith("cuda") else torch.float32)
    )
    options = {"resolution": args.resolution} if args.resolution else {}
    model = None if args.model == "tiny" else args.model
    family = load_family(args.family, model, dtype=dtype, device=args.device, seed=0, **options)
    if args.lora is not None:
        folder = args.lora / "diffusers" if (args.lora / "diffusers").is_dir() else args.lora
        if (folder / LORA_WEIGHTS_NAME).is_file():
            family.transformer.load_lora_adapter(
                str(folder), prefix="transformer", adapter_name="default", weight_name=LORA_WEIGHTS_NAME
            )
        elif (folder / "config.json").is_file():
            family.transformer = type(family.transformer).from_pretrained(folder, torch_dtype=dtype).to(args.device)
        else:
            raise ValueError(
                f"--lora {args.lora}: expected pytorch_lora_weights.safetensors or a transformer config.json"
            )
    family.transformer.eval()
    return family


@contextmanager
def geneval_endpoints(urls: Sequence[str], log_dir: Path, detector: str = "mask2former") -> Iterator[list[str]]:
    """--url, else the running local stack's geneval, else a local stack started (and stopped) here."""
    if urls:
        yield list(urls)
        return
    from rewardflow_kit.stack import read_stack_file, start_stack

    running = read_stack_file().get("geneval")
    if running:
        yield running
        return
    with start_stack(["geneval"], log_dir=log_dir, env={"REWARDFLOW_GENEVAL_DETECTOR": detector}) as stack:
        yield stack.endpoints["geneval"]


def _jobs(entries: Sequence[dict[str, Any]], per_prompt: int, seed: int) -> list[tuple[int, int, int]]:
    """(prompt index, sample index, latent seed) for every image; seeds depend on (seed, prompt, sample) only."""
    return [
        (p, k, int(np.random.SeedSequence([seed, p, k]).generate_state(1, dtype=np.uint32)[0]))
        for p in range(len(entries))
        for k in range(per_prompt)
    ]


def generate_and_score(
    family: Any, entries: Sequence[dict[str, Any]], scorer: RewardScorer, args: argparse.Namespace
) -> list[ImageResult]:
    """Sample every image with the ODE and score each batch while the next one is sampled."""
    guidance = Guidance(scale=args.guidance, cfg=args.guidance > 1)
    jobs = _jobs(entries, args.images_per_prompt, args.seed)
    results: list[ImageResult] = []
    pending: tuple[list[tuple[int, int, int]], np.ndarray, Future] | None = None
    for start in range(0, len(jobs) + args.batch_size, args.batch_size):
        batch = jobs[start : start + args.batch_size]
        if batch:
            prompts = [entries[p]["prompt"] for p, _, _ in batch]
            with torch.no_grad():
                images = sample_eval(
                    family, prompts, num_steps=args.steps, guidance=guidance, latent_seeds=[s for *_, s in batch]
                ).images
            metadata = [entries[p] for p, _, _ in batch]
            future = scorer.submit(images, prompts, metadata)
        if pending is not None:
            results += _collect(entries, *pending, scorer)
        pending = (batch, images, future) if batch else None
        if not batch:
            break
        print(f"sampled {min(start + len(batch), len(jobs))}/{len(jobs)} images", file=sys.stderr)
    return results


def _collect(
    entries: Sequence[dict[str, Any]], batch: list, images: np.ndarray, future: Future, scorer: RewardScorer
) -> list[ImageResult]:
    reply = scorer.result(future)
    out = []
    for i, (p, k, _) in enumerate(batch):
        error = (reply.errors[i] or {}).get("geneval")
        details = reply.details.get("geneval", [None] * len(batch))[i]
        if error is not None:
            correct, score, reason = False, 0.0, f"not scored: {error.code}: {error.message}"
        else:
            correct = bool(reply.scores["geneval"]["strict"][i] == 1.0)
            score = float(reply.scores["geneval"]["score"][i])
            reason = "\n".join((details or {}).get("failed", []))
        out.append(ImageResult(p, k, entries[p], correct, score, reason, details, images[i]))
    return out


def write_report(results: list[ImageResult], args: argparse.Namespace, info: dict[str, Any]) -> dict[str, Any]:
    """summary.md, summary.json, results.jsonl, failures.png and (unless --no-images) GenEval's image folders."""
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for r in results:
        filename = f"images/{r.prompt_index:05d}/samples/{r.sample_index:04d}.png"
        if not args.no_images:
            folder = out / "images" / f"{r.prompt_index:05d}"
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            (folder / "metadata.jsonl").write_text(json.dumps(r.entry) + "\n")
            Image.fromarray(r.image).save(out / filename)
        records.append(r.record(filename))
    (out / "results.jsonl").write_text("".join(json.dumps(rec) + "\n" for rec in records))
    summary = summarize(results)
    summary["run"] = {**info, "model": args.model, "lora": str(args.lora) if args.lora else None, "steps": args.steps,
                      "images_per_prompt": args.images_per_prompt, "guidance": args.guidance, "seed": args.seed,
                      "metadata": str(args.metadata)}  # fmt: skip
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    title = args.model + (f" + {args.lora}" if args.lora else "")
    (out / "summary.md").write_text(summary_markdown(summary, title))
    failures = [r for r in results if not r.correct][: args.max_failures]
    if failures:
        grid = image_grid(
            [r.image for r in failures],
            [f"{r.entry['prompt']} | {r.reason.replace(chr(10), '; ')}" for r in failures],
            [r.score for r in failures],
            title=f"GenEval failures ({sum(not r.correct for r in results)} of {len(results)}); reward = dense score",
            caption_lines=5,
        )
        save_image(grid, out / "failures.png")
    return summary


class EvalError(Exception):
    """A problem with the inputs (options, metadata, model) the user fixes; printed as one line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rewardflow eval geneval`; returns the exit code (2 for a usage, input or service error,
    printed as one line; --debug raises it with its traceback instead)."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return evaluate(args)
    except (EvalError, ConfigError, StackError, RewardServiceError) as exc:
        if args.debug:
            raise
        print(f"rewardflow eval geneval: {exc}", file=sys.stderr)
        return 2


def evaluate(args: argparse.Namespace) -> int:
    """Check the inputs, find (or start) the geneval service, then load the model, sample, score and report."""
    if args.images_per_prompt < 1 or args.steps < 1 or args.batch_size < 1:
        raise EvalError("--images-per-prompt, --steps and --batch-size must be >= 1")
    try:
        entries = read_entries(args.metadata, args.limit)
    except (OSError, ValueError) as exc:
        raise EvalError(f"--metadata: {exc}") from exc
    check_pretrained(args.family, args.model, None, f"run `hf download {args.model}`", "--model")
    try:
        # The service first: a reward that cannot load fails before minutes of model loading.
        with geneval_endpoints(args.url, args.out / "logs", args.detector) as urls:
            try:
                family = load_model(args)
            except (OSError, ValueError) as exc:
                raise EvalError(str(exc)) from exc
            weights = {"geneval_strict": 1.0}
            with RewardScorer({"geneval": urls}, weights, timeout_s=args.timeout, api_key=args.api_key) as scorer:
                results = generate_and_score(family, entries, scorer, args)
    except ValueError as exc:  # no geneval in the local stack's registry: the user passes --url
        raise EvalError(f"{exc}; pass --url http://HOST:PORT of a geneval service") from exc
    info = {"service_urls": urls}
    summary = write_report(results, args, info)
    print((args.out / "summary.md").read_text())
    return 0 if summary["images"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
