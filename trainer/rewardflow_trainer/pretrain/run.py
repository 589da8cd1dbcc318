"""The pretraining run: stage loop with a step or time budget, checkpoints, Ctrl-C/SIGTERM, logs, export.

Layout of the run folder: checkpoint/ (the latest checkpoint, replaced atomically), log.json (settings,
per-stage steps, seconds and losses), loss_curve.png, and at the end model/ (the diffusers folder, with
the prompt split in model/prompts/ and the recommended sampling settings in model/sampling.json).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from rewardflow_trainer.pretrain import checkpoint
from rewardflow_trainer.pretrain.data import ShapesData
from rewardflow_trainer.pretrain.model import MAX_LENGTH, RESOLUTION, build_components, export
from rewardflow_trainer.pretrain.report import loss_curve
from rewardflow_trainer.pretrain.stages import FlowStage, Hyper, VaeStage, latent_stats, set_latent_scale

STAGES = ("vae", "transformer")
MODEL_DIR, PROMPTS_DIR, LOG_FILE, CURVE_FILE = "model", "prompts", "log.json", "loss_curve.png"
SAMPLING_FILE = "sampling.json"
"""In the model folder: the sampling settings the README recommends (CFG scale, ODE steps, 64 px, 16 tokens)."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM: a checkpoint was written; `--resume` continues from it."""


@dataclass(frozen=True)
class Budget:
    """When a stage ends: after `steps` steps if given, else after `minutes` of its own training time."""

    steps: int | None = None
    minutes: float = 1.0

    def done(self, step: int, seconds: float) -> bool:
        return step >= self.steps if self.steps is not None else seconds >= self.minutes * 60


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run; the fields under `identity()` must match on --resume."""

    out: Path
    seed: int = 0
    split_seed: int = 0
    vae: Budget = field(default_factory=lambda: Budget(minutes=5.0))
    transformer: Budget = field(default_factory=lambda: Budget(minutes=30.0))
    hyper: Hyper = field(default_factory=Hyper)
    shift: float = 1.0
    guidance: float = 3.0
    sample_steps: int = 20
    half: bool = True
    checkpoint_minutes: float = 3.0

    def identity(self) -> dict[str, Any]:
        return {"seed": self.seed, "split_seed": self.split_seed, "hyper": asdict(self.hyper)}


@dataclass
class Progress:
    """The JSON part of a checkpoint: the current stage, steps and training seconds per stage, losses."""

    identity: dict[str, Any]
    stage: str = STAGES[0]
    steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    losses: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    latent_mean: float | None = None
    latent_std: float | None = None


class Stage(Protocol):
    name: str

    def step(self, step: int) -> float: ...


StepCallback = Callable[[str, int, float], None]


@contextmanager
def stop_on_signals() -> Iterator[dict[str, int]]:
    """While inside, SIGINT and SIGTERM only set `flag["signal"]`; the loop checkpoints and stops."""
    flag: dict[str, int] = {}
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, _frame: Any) -> None:
        flag["signal"] = signum

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _run_stage(
    stage: Stage,
    budget: Budget,
    progress: Progress,
    save: Callable[[], None],
    settings: Settings,
    flag: dict[str, int],
    on_step: StepCallback | None,
) -> None:
    """Train `stage` until its budget is spent, checkpointing every few minutes and on a signal."""
    name, losses = stage.name, progress.losses[stage.name]
    started, base = time.monotonic(), progress.seconds[name]
    last_save = started
    bar = tqdm(total=budget.steps, initial=progress.steps[name], desc=name, unit="step", dynamic_ncols=True)
    with bar:
        while not budget.done(progress.steps[name], progress.seconds[name]):
            step = progress.steps[name]
            losses.append(stage.step(step))
            progress.steps[name] = step + 1
            progress.seconds[name] = base + time.monotonic() - started
            recent = losses[-50:]
            bar.update(1)
            bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", min=f"{progress.seconds[name] / 60:.1f}")
            if on_step is not None:
                on_step(name, step, losses[-1])
            if "signal" in flag:
                save()
                raise Interrupted(f"stopped by signal {flag['signal']} after {name} step {step + 1}")
            if time.monotonic() - last_save >= settings.checkpoint_minutes * 60:
                save()
                last_save = time.monotonic()


def pretrain(settings: Settings, *, resume: bool = False, on_step: StepCallback | None = None) -> Path:
    """Run (or continue) both stages and export; returns the diffusers folder. Raises Interrupted on a signal."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(identity=settings.identity())
    if resume:
        progress = checkpoint.restore_progress(out, settings.identity(), Progress)
        if progress.stage == "done" and not settings.transformer.done(
            progress.steps["transformer"], progress.seconds["transformer"]
        ):
            progress.stage = "transformer"  # a finished run given a larger budget trains on
    elif checkpoint.exists(out):
        raise FileExistsError(f"{out} holds a checkpoint; pass --resume to continue it or choose another --out")
    data = ShapesData.load(settings.split_seed)
    components = build_components(data.words(), settings.seed)
    vae, transformer = components["vae"], components["transformer"]
    with stop_on_signals() as flag:
        if progress.stage == "vae":
            stage = VaeStage(vae, data, settings.seed, settings.hyper)
            checkpoint.load_weights(out, {"vae": vae}, stage.optimizer)

            def save_vae() -> None:
                checkpoint.save(out, progress, {"vae": vae}, stage.optimizer)

            _run_stage(stage, settings.vae, progress, save_vae, settings, flag, on_step)
            progress.latent_mean, progress.latent_std = latent_stats(vae, data, settings.seed)
            progress.stage = "transformer"
            checkpoint.save(out, progress, {"vae": vae}, None)
        else:
            checkpoint.load_weights(out, {"vae": vae}, None)
        set_latent_scale(vae, progress.latent_mean, progress.latent_std)
        vae.requires_grad_(False).eval()
        flow = FlowStage(components, data, settings.seed, settings.hyper)
        modules = {"vae": vae, "transformer": transformer}
        if progress.steps["transformer"] > 0:
            checkpoint.load_weights(out, modules, flow.optimizer, flow.ema)

        def save_flow() -> None:
            checkpoint.save(out, progress, modules, flow.optimizer, flow.ema)

        if progress.stage == "transformer":
            _run_stage(flow, settings.transformer, progress, save_flow, settings, flag, on_step)
            progress.stage = "done"
            save_flow()
    write_log(settings, progress)
    return finish(settings, components, data, flow)


def finish(settings: Settings, components: dict, data: ShapesData, flow: FlowStage) -> Path:
    """Export the EMA transformer with the VAE and text encoders as a diffusers folder, plus the prompt split."""
    folder = settings.out / MODEL_DIR
    with flow.ema.swapped_in():
        export(components, folder, shift=settings.shift, half=settings.half)
    data.save(folder / PROMPTS_DIR)
    sampling = {
        "resolution": RESOLUTION,
        "guidance_scale": settings.guidance,
        "num_inference_steps": settings.sample_steps,
        "max_sequence_length": MAX_LENGTH,
    }
    (folder / SAMPLING_FILE).write_text(json.dumps(sampling, indent=1) + "\n")
    return folder


def write_log(settings: Settings, progress: Progress) -> None:
    """log.json (settings, steps, seconds, losses per stage) and loss_curve.png in the run folder."""
    summary = {
        "settings": json.loads(json.dumps(asdict(settings), default=str)),
        "latent_mean": progress.latent_mean,
        "latent_std": progress.latent_std,
        "stages": {
            name: {
                "steps": progress.steps[name],
                "seconds": round(progress.seconds[name], 1),
                "final_loss": _tail_mean(progress.losses[name]),
                "losses": progress.losses[name],
            }
            for name in STAGES
        },
        "threads": torch.get_num_threads(),
    }
    (settings.out / LOG_FILE).write_text(json.dumps(summary, indent=1) + "\n")
    if any(progress.losses.values()):
        loss_curve(progress.losses, settings.out / CURVE_FILE)


def _tail_mean(values: list[float], n: int = 100) -> float | None:
    tail = values[-n:]
    return sum(tail) / len(tail) if tail else None
