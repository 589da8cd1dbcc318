"""Typed run configuration: dataclasses with the reference defaults (DESIGN §2), validation and JSON
round trip. Named presets and dotted command-line overrides live in `presets.py`."""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardflow_trainer.prompts import prompt_source_problems

MIXED_PRECISIONS = ("no", "fp16", "bf16")
SDE_TYPES = ("sde", "cps")
LORA_TARGETS_SD3 = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
_REWARD_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*(_[a-z0-9_]+)?$")


class ConfigError(ValueError):
    """A config value is invalid; the message names every bad field, its value and what was expected."""


def _f(default: Any, help: str) -> Any:
    """A dataclass field with an immutable default and a one-line help."""
    return field(default=default, metadata={"help": help})


@dataclass
class ModelConfig:
    """Which model to fine-tune and how it runs."""

    family: str = _f("sd3", "model family (the registry in rewardflow_trainer.models)")
    pretrained: str | None = _f(None, "HF id or local path; None = the tiny random model built from tiny_seed")
    tiny_seed: int = _f(0, "seed of the tiny random model's weights (used when pretrained is None)")
    revision: str | None = _f(None, "HF revision of the pretrained weights")
    resolution: int = _f(512, "image side in pixels (square)")
    mixed_precision: str = _f("fp16", "autocast dtype for the model: no, fp16 or bf16 (the SDE step stays float32)")
    gradient_checkpointing: bool = _f(False, "recompute transformer activations in backward to save memory")


@dataclass
class SampleConfig:
    """How rollouts are sampled (per epoch: num_groups prompts x group_size images, over all ranks)."""

    num_steps: int = _f(10, "denoising steps per training rollout")
    eval_num_steps: int = _f(40, "denoising steps for evaluation (deterministic ODE, noise 0)")
    guidance_scale: float = _f(4.5, "classifier-free guidance weight w")
    cfg: bool = _f(True, "use classifier-free guidance (False = conditional branch only, w ignored)")
    detach_uncond: bool = _f(False, "stop gradients through the unconditional CFG half (older reference)")
    noise_level: float = _f(0.7, "SDE noise level a (0 = deterministic Euler ODE)")
    sde_type: str = _f("sde", "step dynamics: sde (Flow-GRPO SDE) or cps (coefficient-preserving)")
    sde_window: tuple[int, int, int] | None = _f(
        None, "(size, lo, hi): noisy steps only in a window starting in [lo, hi-size]; None = every step"
    )
    same_latent: bool = _f(False, "the group_size images of a prompt start from the same initial noise")
    batch_size: int = _f(8, "images per sampling batch on each rank")
    num_batches_per_epoch: int | None = _f(
        None, "sampling batches per rank per epoch; None = num_groups*group_size/(world_size*batch_size)"
    )
    group_size: int = _f(24, "images per prompt per epoch (k), gathered over all ranks")
    num_groups: int = _f(48, "unique prompts per epoch (m)")
    eval_batch_size: int = _f(16, "images per evaluation batch on each rank")

    def batches_per_epoch(self, world_size: int) -> int:
        """Sampling batches per rank per epoch; ConfigError if the grouping does not tile the ranks."""
        per_epoch = self.num_groups * self.group_size
        per_round = world_size * self.batch_size
        if per_epoch % per_round:
            raise ConfigError(
                f"sample: num_groups*group_size = {self.num_groups}*{self.group_size} = {per_epoch} must be a "
                f"multiple of world_size*batch_size = {world_size}*{self.batch_size} = {per_round}"
            )
        derived = per_epoch // per_round
        if self.num_batches_per_epoch is not None and self.num_batches_per_epoch != derived:
            raise ConfigError(
                f"sample.num_batches_per_epoch = {self.num_batches_per_epoch}, expected {derived} "
                f"(= {per_epoch} images / ({world_size} ranks x batch {self.batch_size})) or None"
            )
        return derived

    def num_train_timesteps(self) -> int:
        """How many steps of each trajectory carry log-probs (the window's steps, or all)."""
        return self.sde_window[0] if self.sde_window is not None else self.num_steps


@dataclass
class LoraConfig:
    """LoRA adapter on the transformer (peft)."""

    rank: int = _f(32, "adapter rank r")
    alpha: float = _f(64.0, "adapter scaling alpha (scale = alpha / rank)")
    target_modules: tuple[str, ...] = _f(LORA_TARGETS_SD3, "module names the adapter wraps")
    dropout: float = _f(0.0, "dropout on the adapter input")


@dataclass
class EmaConfig:
    """Exponential moving average of the trainable weights (eval and checkpoints only, never rollouts)."""

    enabled: bool = _f(True, "keep an EMA copy of the trainable weights")
    decay: float = _f(0.9, "EMA decay (warm-up min((1+t)/(10+t), decay))")
    update_every: int = _f(8, "optimizer steps between EMA updates")


@dataclass
class TrainConfig:
    """The GRPO update."""

    learning_rate: float = _f(3e-4, "AdamW learning rate")
    adam_betas: tuple[float, float] = _f((0.9, 0.999), "AdamW (beta1, beta2)")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    adam_eps: float = _f(1e-8, "AdamW epsilon")
    max_grad_norm: float = _f(1.0, "gradient-norm clip")
    clip_range: float = _f(1e-4, "PPO ratio clip epsilon")
    beta: float = _f(0.04, "weight of the KL penalty to the reference model (0 = no reference pass)")
    timestep_fraction: float = _f(0.99, "fraction of the stored steps that are trained (first ones, in order)")
    num_inner_epochs: int = _f(1, "passes over each epoch's samples")
    batch_size: int = _f(8, "samples per training micro-batch on each rank")
    gradient_accumulation_steps: int | None = _f(
        None, "micro-batches per optimizer step; None = half the sampling batches per epoch (at least 1)"
    )
    adv_clip_max: float = _f(5.0, "clip advantages to [-adv_clip_max, adv_clip_max]")
    global_std: bool = _f(True, "normalize advantages by the std of all rewards of the epoch (else per prompt)")
    lora: LoraConfig | None = field(
        default_factory=LoraConfig, metadata={"help": "LoRA adapter; None = full fine-tuning"}
    )
    ema: EmaConfig = field(default_factory=EmaConfig, metadata={"help": "EMA of the trainable weights"})

    def accumulation_steps(self, batches_per_epoch: int) -> int:
        """Micro-batches per optimizer step, resolving None to the reference's half an epoch."""
        if self.gradient_accumulation_steps is not None:
            return self.gradient_accumulation_steps
        return max(1, batches_per_epoch // 2)


@dataclass
class RewardConfig:
    """Which rewards, their weights, and where the services are."""

    weights: dict[str, float] = field(
        default_factory=lambda: {"jpeg_compressibility": 1.0}, metadata={"help": "reward name -> weight of its score"}
    )
    endpoints: dict[str, list[str]] | None = field(
        default=None, metadata={"help": "service -> base URLs; None = the local stack file"}
    )
    start_local_stack: bool = _f(False, "start the needed services as local processes when none is running")
    timeout_s: float = _f(60.0, "per-request timeout of the reward client")
    max_retries: int = _f(4, "retries of a failed idempotent request")
    api_key: str | None = _f(None, "API key sent to the services (never written to the saved config)")

    def services(self) -> list[str]:
        """Service names the weights need (the part of each reward name before the first '_')."""
        return sorted({name.split("_", 1)[0] for name in self.weights})


@dataclass
class PromptConfig:
    """Where train and eval prompts come from: a built-in set name, a .txt file or a .jsonl file."""

    train: str = _f("tiny", "training prompts: built-in name, .txt (one per line) or .jsonl ({'prompt': ...})")
    eval: str = _f("tiny_eval", "held-out evaluation prompts (same forms)")
    eval_limit: int | None = _f(None, "evaluate on the first N eval prompts only; None = all")


@dataclass
class RunConfig:
    """Run length, seeds, outputs."""

    epochs: int = _f(1000, "training epochs")
    seed: int = _f(42, "base seed (prompt sampler uses seed + epoch on every rank)")
    out_dir: str = _f("runs/rewardflow", "run directory: metrics.jsonl, plots, grids, checkpoints, config.json")
    eval_every: int = _f(60, "evaluate every N epochs (0 = never)")
    save_every: int = _f(60, "checkpoint every N epochs (0 = only at the end)")
    grid_every: int = _f(60, "save a captioned sample grid every N epochs (0 = first and last only)")
    keep_checkpoints: int = _f(3, "keep the last K checkpoints")
    resume: str | None = _f(None, "checkpoint dir, or a run dir (its latest checkpoint), to resume from")
    log_every: int = _f(1, "write metrics every N epochs")
    wandb: bool = _f(False, "also log to Weights & Biases (needs the wandb package)")
    wandb_project: str = _f("rewardflow", "wandb project name")
    progress: bool = _f(True, "show progress bars")


@dataclass
class Config:
    """Everything a training run reads; the trainer never reads an untyped dict."""

    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "model"})
    sample: SampleConfig = field(default_factory=SampleConfig, metadata={"help": "rollout sampling"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "policy update"})
    reward: RewardConfig = field(default_factory=RewardConfig, metadata={"help": "rewards"})
    prompts: PromptConfig = field(default_factory=PromptConfig, metadata={"help": "prompt sets"})
    run: RunConfig = field(default_factory=RunConfig, metadata={"help": "run"})
    preset: str = _f("", "name of the preset this config started from ('' = none)")

    def validate(self, check_paths: bool = True) -> Config:
        """Raise ConfigError naming every invalid field; check_paths also requires files to exist."""
        problems = _problems(self, check_paths)
        if problems:
            raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
        return self

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); redact drops the API key."""
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        if redact:
            data["reward"]["api_key"] = None
        return data

    def to_json(self, redact: bool = True) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(redact), indent=2, sort_keys=False) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write config.json (API key redacted)."""
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Config:
        """Build from a dict as written by to_dict; unknown keys are errors."""
        return convert_value(data, cls, "")

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read a config.json."""
        return cls.from_dict(json.loads(Path(path).read_text()))


# --- typed conversion (JSON values and command-line text) -------------------------------------


def union_args(hint: Any) -> tuple[Any, ...] | None:
    """The members of `X | Y` / Optional[X], None for any other hint."""
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(hint)
    return None


def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint of a config dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def type_name(hint: Any) -> str:
    """A readable name of a type hint for error messages."""
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def convert_value(value: Any, hint: Any, path: str) -> Any:
    """Check a JSON-typed value against a type hint and build the typed value (tuples, dataclasses)."""
    where = path or "config"
    args = union_args(hint)
    if args is not None:
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return convert_value(value, option, path)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where} = {value!r}: expected {type_name(hint)}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r}: expected a mapping of {hint.__name__} fields")
        known = field_types(hint)
        unknown = sorted(set(value) - set(known))
        if unknown:
            prefix = f"{path}." if path else ""
            raise ConfigError(unknown_key_message(prefix + unknown[0], [prefix + k for k in known]))
        kwargs = {k: convert_value(v, known[k], f"{path}.{k}" if path else k) for k, v in value.items()}
        return hint(**kwargs)
    origin = typing.get_origin(hint)
    if origin is tuple or origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} = {value!r}: expected a list ({type_name(hint)})")
        items = typing.get_args(hint)
        if origin is tuple and not (len(items) == 2 and items[1] is Ellipsis):
            if len(value) != len(items):
                raise ConfigError(f"{where} = {value!r}: expected {len(items)} items ({type_name(hint)})")
            return tuple(convert_value(v, t, f"{path}[{i}]") for i, (v, t) in enumerate(zip(value, items, strict=True)))
        converted = [convert_value(v, items[0], f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(converted) if origin is tuple else converted
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} = {value!r}: expected a mapping ({type_name(hint)})")
        key_type, value_type = typing.get_args(hint)
        return {convert_value(k, key_type, path): convert_value(v, value_type, f"{path}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} = {value!r}: expected true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} = {value!r}: expected an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} = {value!r}: expected a number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} = {value!r}: expected a string")
        return value
    raise ConfigError(f"{where}: unsupported config type {type_name(hint)}")


def unknown_key_message(key: str, valid: list[str]) -> str:
    """Error text for an unknown key, with close matches (or every valid key)."""
    close = difflib.get_close_matches(key, valid, n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid keys: {', '.join(sorted(valid))}"
    return f"unknown config key {key!r}{hint}"


# --- validation --------------------------------------------------------------------------------


def _problems(config: Config, check_paths: bool) -> list[str]:
    """Every invalid field as 'key = value: expected ...'."""
    out: list[str] = []

    def need(ok: bool, key: str, value: Any, expected: str) -> None:
        if not ok:
            out.append(f"{key} = {value!r}: expected {expected}")

    m, s, t, r, p, run = config.model, config.sample, config.train, config.reward, config.prompts, config.run
    from rewardflow_trainer.models import FAMILIES  # heavy (diffusers); only when validating

    need(m.family in FAMILIES, "model.family", m.family, f"one of {sorted(FAMILIES)}")
    need(m.resolution > 0 and m.resolution % 16 == 0, "model.resolution", m.resolution, "a positive multiple of 16")
    need(
        m.mixed_precision in MIXED_PRECISIONS, "model.mixed_precision", m.mixed_precision, f"one of {MIXED_PRECISIONS}"
    )

    need(s.num_steps >= 1, "sample.num_steps", s.num_steps, ">= 1")
    need(s.eval_num_steps >= 1, "sample.eval_num_steps", s.eval_num_steps, ">= 1")
    need(_finite(s.guidance_scale) and s.guidance_scale >= 0, "sample.guidance_scale", s.guidance_scale, ">= 0")
    need(s.sde_type in SDE_TYPES, "sample.sde_type", s.sde_type, f"one of {SDE_TYPES}")
    top = 1.0 if s.sde_type == "cps" else math.inf
    need(
        _finite(s.noise_level) and 0 <= s.noise_level <= top,
        "sample.noise_level",
        s.noise_level,
        "in [0, 1] for cps" if s.sde_type == "cps" else ">= 0",
    )
    if s.sde_window is not None:
        size, lo, hi = s.sde_window
        need(
            0 <= lo < hi <= s.num_steps and 1 <= size <= hi - lo,
            "sample.sde_window",
            s.sde_window,
            f"(size, lo, hi) with 0 <= lo < hi <= num_steps ({s.num_steps}) and 1 <= size <= hi - lo",
        )
    need(s.batch_size >= 1, "sample.batch_size", s.batch_size, ">= 1")
    need(s.eval_batch_size >= 1, "sample.eval_batch_size", s.eval_batch_size, ">= 1")
    need(s.group_size >= 2, "sample.group_size", s.group_size, ">= 2 (a group of one has no advantage)")
    need(s.num_groups >= 1, "sample.num_groups", s.num_groups, ">= 1")
    if s.num_batches_per_epoch is not None:
        need(s.num_batches_per_epoch >= 1, "sample.num_batches_per_epoch", s.num_batches_per_epoch, ">= 1 or None")
        images = s.num_groups * s.group_size
        per_rank = s.num_batches_per_epoch * s.batch_size
        need(
            per_rank > 0 and images % per_rank == 0,
            "sample.num_batches_per_epoch",
            s.num_batches_per_epoch,
            f"a value with num_groups*group_size ({images}) a multiple of num_batches_per_epoch*batch_size",
        )

    need(_finite(t.learning_rate) and t.learning_rate > 0, "train.learning_rate", t.learning_rate, "> 0")
    need(all(_finite(b) and 0 <= b < 1 for b in t.adam_betas), "train.adam_betas", t.adam_betas, "two values in [0, 1)")
    need(_finite(t.weight_decay) and t.weight_decay >= 0, "train.weight_decay", t.weight_decay, ">= 0")
    need(_finite(t.adam_eps) and t.adam_eps > 0, "train.adam_eps", t.adam_eps, "> 0")
    need(_finite(t.max_grad_norm) and t.max_grad_norm > 0, "train.max_grad_norm", t.max_grad_norm, "> 0")
    need(_finite(t.clip_range) and t.clip_range > 0, "train.clip_range", t.clip_range, "> 0")
    need(_finite(t.beta) and t.beta >= 0, "train.beta", t.beta, ">= 0")
    need(
        _finite(t.timestep_fraction) and 0 < t.timestep_fraction <= 1,
        "train.timestep_fraction",
        t.timestep_fraction,
        "in (0, 1]",
    )
    need(t.num_inner_epochs >= 1, "train.num_inner_epochs", t.num_inner_epochs, ">= 1")
    need(t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1")
    if t.gradient_accumulation_steps is not None:
        need(
            t.gradient_accumulation_steps >= 1,
            "train.gradient_accumulation_steps",
            t.gradient_accumulation_steps,
            ">= 1 or None",
        )
    need(_finite(t.adv_clip_max) and t.adv_clip_max > 0, "train.adv_clip_max", t.adv_clip_max, "> 0")
    if t.lora is not None:
        need(t.lora.rank >= 1, "train.lora.rank", t.lora.rank, ">= 1")
        need(_finite(t.lora.alpha) and t.lora.alpha > 0, "train.lora.alpha", t.lora.alpha, "> 0")
        need(
            len(t.lora.target_modules) > 0,
            "train.lora.target_modules",
            t.lora.target_modules,
            "at least one module name (or train.lora=None for full fine-tuning)",
        )
        need(0 <= t.lora.dropout < 1, "train.lora.dropout", t.lora.dropout, "in [0, 1)")
    need(0 <= t.ema.decay < 1, "train.ema.decay", t.ema.decay, "in [0, 1)")
    need(t.ema.update_every >= 1, "train.ema.update_every", t.ema.update_every, ">= 1")

    need(len(r.weights) > 0, "reward.weights", r.weights, "at least one reward, e.g. {'jpeg_compressibility': 1.0}")
    for name, weight in r.weights.items():
        need(
            bool(_REWARD_NAME.match(name)),
            f"reward.weights.{name}",
            weight,
            "a reward name '<service>' or '<service>_<score_key>' (lower case)",
        )
        need(_finite(weight), f"reward.weights.{name}", weight, "a finite number")
    if r.endpoints is not None:
        for service in r.services():
            need(service in r.endpoints, "reward.endpoints", r.endpoints, f"URLs for service {service!r}")
        for service, urls in r.endpoints.items():
            need(
                len(urls) > 0 and all(u.startswith(("http://", "https://")) for u in urls),
                f"reward.endpoints.{service}",
                urls,
                "a non-empty list of http(s):// URLs",
            )
    need(_finite(r.timeout_s) and r.timeout_s > 0, "reward.timeout_s", r.timeout_s, "> 0")
    need(r.max_retries >= 0, "reward.max_retries", r.max_retries, ">= 0")

    for key, source in (("prompts.train", p.train), ("prompts.eval", p.eval)):
        out.extend(prompt_source_problems(key, source, check_paths))
    if p.eval_limit is not None:
        need(p.eval_limit >= 1, "prompts.eval_limit", p.eval_limit, ">= 1 or None")

    need(run.epochs >= 1, "run.epochs", run.epochs, ">= 1")
    for key in ("eval_every", "save_every", "grid_every"):
        need(getattr(run, key) >= 0, f"run.{key}", getattr(run, key), ">= 0 (0 = never / first and last only)")
    need(run.keep_checkpoints >= 1, "run.keep_checkpoints", run.keep_checkpoints, ">= 1")
    need(run.log_every >= 1, "run.log_every", run.log_every, ">= 1")
    need(bool(run.out_dir), "run.out_dir", run.out_dir, "a directory path")
    if check_paths and run.resume is not None:
        need(Path(run.resume).exists(), "run.resume", run.resume, "an existing checkpoint or run directory")
    return out


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
