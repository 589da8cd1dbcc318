"""Typed run configuration on pydantic: the reference defaults (docs/algorithm.md, "Reference defaults"),
field constraints and cross-field rules that name the field, and the JSON round trip.

Named presets and `section.field=value` overrides live in `presets.py`. Constraints are checked when a
config is built or a field assigned; `Config.validate()` adds what depends on the machine (files exist,
the model family is registered).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from rewardflow_proto.names import did_you_mean

from rewardflow_trainer.prompts import prompt_source_problems

LORA_TARGETS_SD3 = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
REWARD_NAME_PATTERN = r"^[a-z0-9][a-z0-9-]*(_[a-z0-9_]+)?$"


class ConfigError(ValueError):
    """A config value is invalid; the message names every bad field, its value and what was expected."""


def _split_commas(value: Any) -> Any:
    """`a,b,c` on the command line is the list [a, b, c] (YAML's `[a, b, c]` works too)."""
    return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value


CommaList = BeforeValidator(_split_commas)


def _f(default: Any, help: str, **constraints: Any) -> Any:
    """A field with a default, a one-line help and pydantic constraints (ge, gt, lt, le)."""
    return Field(default, description=help, **constraints)


def _section(factory: Any, help: str) -> Any:
    return Field(default_factory=factory, description=help)


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments are validated, floats must be finite."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, coerce_numbers_to_str=True)


class ModelConfig(Section):
    """Which model to fine-tune and how it runs."""

    family: str = _f("sd3", "model family (the registry in rewardflow_trainer.models)")
    pretrained: str | None = _f(None, "HF id or local path; None = the tiny random model built from tiny_seed")
    tiny_seed: int = _f(0, "seed of the tiny random model's weights (used when pretrained is None)")
    revision: str | None = _f(None, "HF revision of the pretrained weights")
    resolution: int = _f(512, "image side in pixels (square, a multiple of 16)", gt=0, multiple_of=16)
    mixed_precision: Literal["no", "fp16", "bf16"] = _f(
        "fp16", "autocast dtype for the model: no, fp16 or bf16 (the SDE step stays float32)"
    )
    gradient_checkpointing: bool = _f(False, "recompute transformer activations in backward to save memory")


class SampleConfig(Section):
    """How rollouts are sampled (per epoch: num_groups prompts x group_size images, over all ranks)."""

    num_steps: int = _f(10, "denoising steps per training rollout", ge=1)
    eval_num_steps: int = _f(40, "denoising steps for evaluation (deterministic ODE, noise 0)", ge=1)
    guidance_scale: float = _f(4.5, "classifier-free guidance weight w", ge=0)
    cfg: bool = _f(True, "use classifier-free guidance (False = conditional branch only, w ignored)")
    detach_uncond: bool = _f(False, "stop gradients through the unconditional CFG half (older reference)")
    noise_level: float = _f(0.7, "SDE noise level a (0 = deterministic Euler ODE; at most 1 for cps)", ge=0)
    sde_type: Literal["sde", "cps"] = _f("sde", "step dynamics: sde (Flow-GRPO SDE) or cps (coefficient-preserving)")
    sde_window: Annotated[tuple[int, int, int] | None, CommaList] = _f(
        None, "(size, lo, hi): noisy steps only in a window starting in [lo, hi-size]; None = every step"
    )
    same_latent: bool = _f(False, "the group_size images of a prompt start from the same initial noise")
    batch_size: int = _f(8, "images per sampling batch on each rank", ge=1)
    num_batches_per_epoch: int | None = _f(
        None, "sampling batches per rank per epoch; None = num_groups*group_size/(world_size*batch_size)", ge=1
    )
    group_size: int = _f(24, "images per prompt per epoch (k), gathered over all ranks; a group of one has none", ge=2)
    num_groups: int = _f(48, "unique prompts per epoch (m)", ge=1)
    eval_batch_size: int = _f(16, "images per evaluation batch on each rank", ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> SampleConfig:
        if self.sde_type == "cps" and self.noise_level > 1:
            raise ValueError(f"sample.noise_level = {self.noise_level}: expected in [0, 1] for cps")
        if self.sde_window is not None:
            size, lo, hi = self.sde_window
            if not (0 <= lo < hi <= self.num_steps and 1 <= size <= hi - lo):
                raise ValueError(
                    f"sample.sde_window = {self.sde_window}: expected (size, lo, hi) with 0 <= lo < hi <= num_steps "
                    f"({self.num_steps}) and 1 <= size <= hi - lo"
                )
        if self.num_batches_per_epoch is not None:
            images, per_rank = self.num_groups * self.group_size, self.num_batches_per_epoch * self.batch_size
            if images % per_rank:
                raise ValueError(
                    f"sample.num_batches_per_epoch = {self.num_batches_per_epoch}: expected a value with "
                    f"num_groups*group_size ({images}) a multiple of num_batches_per_epoch*batch_size"
                )
        return self

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


class LoraConfig(Section):
    """LoRA adapter on the transformer (peft)."""

    rank: int = _f(32, "adapter rank r", ge=1)
    alpha: float = _f(64.0, "adapter scaling alpha (scale = alpha / rank)", gt=0)
    target_modules: Annotated[tuple[str, ...], CommaList] = _f(
        LORA_TARGETS_SD3, "module names the adapter wraps (or train.lora=null for full fine-tuning)", min_length=1
    )
    dropout: float = _f(0.0, "dropout on the adapter input", ge=0, lt=1)


class EmaConfig(Section):
    """Exponential moving average of the trainable weights (eval and checkpoints only, never rollouts)."""

    enabled: bool = _f(True, "keep an EMA copy of the trainable weights")
    decay: float = _f(0.9, "EMA decay (warm-up min((1+t)/(10+t), decay))", ge=0, lt=1)
    update_every: int = _f(8, "optimizer steps between EMA updates", ge=1)


class DpoConfig(Section):
    """Diffusion-DPO (train.algorithm=dpo): best vs worst of each group (docs/algorithm.md, "DPO")."""

    beta: float = _f(100.0, "DPO temperature beta on the flow-matching error differences", gt=0)
    ref_update_step: int | None = _f(
        None, "copy the policy into the reference every N optimizer steps; null = never (offline DPO)", ge=1
    )
    sample_from: Literal["reference", "policy"] = _f("reference", "which weights draw the rollouts")
    logit_mean: float = _f(0.0, "mean of the logit-normal t")
    logit_std: float = _f(1.0, "std of the logit-normal t", gt=0)


class SftConfig(Section):
    """Flow matching on each group's best sample(s) (train.algorithm=sft; docs/algorithm.md, "SFT")."""

    logit_mean: float = _f(0.0, "mean of the logit-normal t")
    logit_std: float = _f(1.0, "std of the logit-normal t", gt=0)


class NftConfig(Section):
    """DiffusionNFT (train.algorithm=nft; docs/algorithm.md, "DiffusionNFT"): ODE rollouts without CFG."""

    beta: float = _f(1.0, "NFT beta: v+ = (1-beta) v_old + beta v, v- = (1+beta) v_old - beta v", gt=0)
    decay_rate: float = _f(0.001, "old-policy decay grows by this per optimizer step", ge=0)
    decay_delay: int = _f(0, "optimizer steps before the old-policy decay starts growing", ge=0)
    decay_max: float = _f(0.5, "cap of the old-policy decay (old = d old + (1-d) policy after each epoch)", ge=0, le=1)


class TrainConfig(Section):
    """The policy update: the algorithm and its settings."""

    algorithm: Literal["grpo", "dpo", "sft", "nft"] = _f(
        "grpo", "training algorithm: grpo (Flow-GRPO), dpo (Diffusion-DPO), sft (best samples), nft (DiffusionNFT)"
    )
    guard: bool = _f(False, "GRPO-Guard: normalized per-step ratio and 1/(sigma - sigma_next) reweighting (grpo, sde)")
    advantages: Literal["sum", "per_reward"] = _f(
        "sum", "multi-reward: normalize the weighted sum (sum) or each reward, then sum (per_reward, GDPO-style)"
    )
    learning_rate: float = _f(3e-4, "AdamW learning rate", gt=0)
    adam_betas: Annotated[tuple[float, float], CommaList] = _f((0.9, 0.999), "AdamW (beta1, beta2), each in [0, 1)")
    weight_decay: float = _f(1e-4, "AdamW weight decay", ge=0)
    adam_eps: float = _f(1e-8, "AdamW epsilon", gt=0)
    max_grad_norm: float = _f(1.0, "gradient-norm clip", gt=0)
    clip_range: float = _f(1e-4, "PPO ratio clip epsilon", gt=0)
    beta: float = _f(0.04, "weight of the KL penalty to the reference model (0 = no reference pass)", ge=0)
    timestep_fraction: float = _f(
        0.99, "fraction of the stored steps that are trained (first ones, in order)", gt=0, le=1
    )
    num_inner_epochs: int = _f(1, "passes over each epoch's samples", ge=1)
    batch_size: int = _f(8, "samples per training micro-batch on each rank", ge=1)
    gradient_accumulation_steps: int | None = _f(
        None, "micro-batches per optimizer step; None = half the sampling batches per epoch (at least 1)", ge=1
    )
    adv_clip_max: float = _f(5.0, "clip advantages to [-adv_clip_max, adv_clip_max]", gt=0)
    global_std: bool = _f(True, "normalize advantages by the std of all rewards of the epoch (else per prompt)")
    lora: LoraConfig | None = _section(LoraConfig, "LoRA adapter; null = full fine-tuning")
    ema: EmaConfig = _section(EmaConfig, "EMA of the trainable weights")
    dpo: DpoConfig = _section(DpoConfig, "Diffusion-DPO settings")
    sft: SftConfig = _section(SftConfig, "SFT settings")
    nft: NftConfig = _section(NftConfig, "DiffusionNFT settings")

    @field_validator("adam_betas")
    @classmethod
    def _betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"expected two values in [0, 1), got {betas}")
        return betas

    def accumulation_steps(self, batches_per_epoch: int) -> int:
        """Micro-batches per optimizer step, resolving None to the reference's half an epoch."""
        if self.gradient_accumulation_steps is not None:
            return self.gradient_accumulation_steps
        return max(1, batches_per_epoch // 2)


def _drop_removed(entries: Any) -> Any:
    """`reward.weights.NAME=null` on the command line removes that entry."""
    return {k: v for k, v in entries.items() if v is not None} if isinstance(entries, dict) else entries


class RewardConfig(Section):
    """Which rewards, their weights, and where the services are."""

    weights: Annotated[dict[str, float], BeforeValidator(_drop_removed)] = Field(
        default_factory=lambda: {"jpeg_compressibility": 1.0},
        description="reward name ('<service>' or '<service>_<score key>') -> weight of its score",
        min_length=1,
    )
    endpoints: Annotated[dict[str, Annotated[list[str], CommaList]] | None, BeforeValidator(_drop_removed)] = _f(
        None, "service -> base URLs; null = the local stack (started or found)"
    )
    start_local_stack: bool = _f(False, "start the needed services as local processes when none is running")
    timeout_s: float = _f(60.0, "per-request timeout of the reward client", gt=0)
    max_retries: int = _f(4, "retries of a failed idempotent request", ge=0)
    on_invalid_score: Literal["stop", "drop"] = _f(
        "stop",
        "an image without a finite score (NaN, an item error): stop the run naming it, or drop the sample "
        "from the advantages and count it (metric dropped_samples)",
    )
    outage_grace_s: float = _f(
        300.0, "seconds to keep retrying when every replica of a reward is down, then checkpoint and exit", ge=0
    )
    api_key: str | None = _f(None, "API key sent to the services (never written to the saved config)")
    local_env: dict[str, str] = Field(
        default_factory=dict, description="environment of services this run starts, e.g. REWARDFLOW_GENEVAL_DETECTOR"
    )

    @field_validator("weights")
    @classmethod
    def _reward_names(cls, weights: dict[str, float]) -> dict[str, float]:
        for name, weight in weights.items():
            if not re.match(REWARD_NAME_PATTERN, name):
                raise ValueError(
                    f"reward.weights.{name} = {weight}: expected a reward name '<service>' or '<service>_<score_key>'"
                )
        return weights

    @field_validator("endpoints")
    @classmethod
    def _urls(cls, endpoints: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for service, urls in (endpoints or {}).items():
            if not urls or not all(u.startswith(("http://", "https://")) for u in urls):
                raise ValueError(f"reward.endpoints.{service} = {urls}: expected a non-empty list of http(s):// URLs")
        return endpoints

    @model_validator(mode="after")
    def _endpoints_cover_weights(self) -> RewardConfig:
        if self.endpoints is not None:
            self.services(list(self.endpoints))
        return self

    def services(self, known: Sequence[str]) -> list[str]:
        """The services the weights need, among `known` ones (the client's rule: longest name prefix)."""
        from rewardflow_proto.client_policy import reward_service_suggestions, service_of

        needed = set()
        for name in self.weights:
            try:
                needed.add(service_of(name, known))
            except ValueError:
                unknown = did_you_mean(name, sorted(known), "reward service", reward_service_suggestions(name, known))
                raise ValueError(
                    f"reward.weights.{name} = {self.weights[name]}: expected a reward of one of the services "
                    f"('<service>' or '<service>_<score key>'): {unknown}"
                ) from None
        return sorted(needed)


class PromptConfig(Section):
    """Where train and eval prompts come from: a built-in set name, a .txt file or a .jsonl file."""

    train: str = _f("tiny", "training prompts: built-in name, .txt (one per line) or .jsonl ({'prompt': ...})")
    eval: str = _f("tiny_eval", "held-out evaluation prompts (same forms)")
    eval_limit: int | None = _f(None, "evaluate on the first N eval prompts only; None = all", ge=1)
    eval_images_per_prompt: int = _f(1, "eval images per prompt, one noise seed each (GenEval: 4)", ge=1)

    @model_validator(mode="after")
    def _known_forms(self) -> PromptConfig:
        problems = [
            p for k in ("train", "eval") for p in prompt_source_problems(f"prompts.{k}", getattr(self, k), False)
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RunConfig(Section):
    """Run length, seeds, outputs."""

    epochs: int = _f(1000, "training epochs", ge=1)
    seed: int = _f(42, "base seed (prompt sampler uses seed + epoch on every rank)")
    out_dir: str = _f(
        "runs/rewardflow", "run directory: metrics.jsonl, plots, grids, checkpoints, config.json", min_length=1
    )
    eval_every: int = _f(60, "evaluate every N epochs (0 = never)", ge=0)
    save_every: int = _f(60, "checkpoint every N epochs (0 = only at the end)", ge=0)
    grid_every: int = _f(60, "save a captioned sample grid every N epochs (0 = first and last only)", ge=0)
    keep_checkpoints: int = _f(3, "keep the last K checkpoints", ge=1)
    resume: str | None = _f(None, "checkpoint dir, or a run dir (its latest checkpoint), to resume from")
    log_every: int = _f(1, "write metrics every N epochs", ge=1)
    wandb: bool = _f(False, "also log to Weights & Biases (needs the wandb package)")
    wandb_project: str = _f("rewardflow", "wandb project name")
    progress: bool = _f(True, "show progress bars")


class Config(Section):
    """Everything a training run reads; the trainer never reads an untyped dict."""

    model: ModelConfig = _section(ModelConfig, "model")
    sample: SampleConfig = _section(SampleConfig, "rollout sampling")
    train: TrainConfig = _section(TrainConfig, "policy update")
    reward: RewardConfig = _section(RewardConfig, "rewards")
    prompts: PromptConfig = _section(PromptConfig, "prompt sets")
    run: RunConfig = _section(RunConfig, "run")
    preset: str = _f("", "name of the preset this config started from ('' = none)")

    @model_validator(mode="after")
    def _cps_kl_needs_noise(self) -> Config:
        # The CPS step's std is sigma_next * sin(a pi/2): 0 at the last step, where the KL's 1/(2 s^2) makes
        # 0/0 and the weights non-finite after one update (docs/algorithm.md, "CPS and the last step").
        s, t = self.sample, self.train
        if s.sde_type == "cps" and t.beta > 0 and self.trains_last_step():
            where = f"sample.sde_window = {s.sde_window}" if s.sde_window else "train.timestep_fraction = 1.0"
            raise ValueError(
                f"sample.sde_type = 'cps' with train.beta = {t.beta} trains the last step ({where}), where the CPS "
                "noise is 0 and the KL divides 0 by 0: set train.timestep_fraction below 1 (the window's hi below "
                "sample.num_steps), or train.beta = 0"
            )
        return self

    @model_validator(mode="after")
    def _guard_needs_the_sde(self) -> Config:
        if self.train.guard and (self.train.algorithm != "grpo" or self.sample.sde_type != "sde"):
            raise ValueError(
                f"train.guard = true with train.algorithm = {self.train.algorithm!r} and sample.sde_type = "
                f"{self.sample.sde_type!r}: GRPO-Guard normalizes the Flow-SDE ratio; expected grpo and sde"
            )
        return self

    def trains_last_step(self) -> bool:
        """Whether the final step (sigma_next = 0) can be trained: a window reaching it, or every step kept."""
        if self.sample.sde_window is not None:  # a window's steps are all trained, whatever timestep_fraction says
            return self.sample.sde_window[2] == self.sample.num_steps
        return self.train.timestep_fraction == 1.0  # int(T * fraction) < T for every fraction below 1

    @classmethod
    def build(cls, data: dict[str, Any]) -> Config:
        """Validate a nested dict (as written by to_dict); ConfigError names every bad field."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise ConfigError(format_errors(error)) from None

    def validate(self, check_paths: bool = True) -> Config:
        """Every rule again (fields may have been assigned since), plus what depends on the machine: the family
        is registered and, with check_paths, the files named exist."""
        from rewardflow_trainer.models import FAMILIES  # heavy (diffusers); only when validating

        Config.build(self.to_dict(redact=False))  # cross-section rules do not rerun on a nested assignment
        problems = []
        if self.model.family not in FAMILIES:
            problems.append(f"model.family = {self.model.family!r}: expected one of {sorted(FAMILIES)}")
        for key in ("train", "eval"):
            problems += prompt_source_problems(f"prompts.{key}", getattr(self.prompts, key), check_paths)
        if check_paths and self.run.resume is not None and not Path(self.run.resume).exists():
            problems.append(f"run.resume = {self.run.resume!r}: expected an existing checkpoint or run directory")
        if problems:
            raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
        return self

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists); redact drops the API key."""
        data = self.model_dump(mode="json")
        if redact:
            data["reward"]["api_key"] = None
        return data

    def to_json(self, redact: bool = True) -> str:
        """Indented JSON text."""
        return json.dumps(self.to_dict(redact), indent=2) + "\n"

    def save(self, path: str | Path) -> Path:
        """Write config.json (API key redacted)."""
        path = Path(path)
        path.write_text(self.to_json())
        return path

    @classmethod
    def load(cls, path: str | Path) -> Config:
        """Read a config.json."""
        return cls.build(json.loads(Path(path).read_text()))


# --- keys and messages -------------------------------------------------------------------------


def _section_type(info: FieldInfo) -> type[BaseModel] | None:
    """The config section a field holds (through `X | None`), or None for a plain value."""
    hint = info.annotation
    for option in getattr(hint, "__args__", None) or (hint,):
        if isinstance(option, type) and issubclass(option, BaseModel):
            return option
    return None


def config_keys(cls: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    """Every dotted key a config accepts (nested sections expanded)."""
    keys = []
    for name, info in cls.model_fields.items():
        keys.append(prefix + name)
        section = _section_type(info)
        if section is not None:
            keys.extend(config_keys(section, f"{prefix}{name}."))
    return keys


def unknown_key_message(key: str, valid: list[str]) -> str:
    """Error text for an unknown key, with close matches (or every valid key)."""
    return did_you_mean(key, valid, "config key")


_KEYED = re.compile(r"^[a-z_]+\.[\w.-]+ = ")


def format_errors(error: ValidationError) -> str:
    """pydantic's errors as 'key = value: what was expected', one line each."""
    lines = []
    for item in error.errors(include_url=False):
        key = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(unknown_key_message(key, config_keys()))
        elif item["type"] == "value_error" and _KEYED.match(str(item["ctx"]["error"])):
            lines.append(str(item["ctx"]["error"]))  # a cross-field rule: its message names the field itself
        else:
            message = str(item["ctx"]["error"]) if item["type"] == "value_error" else item["msg"]
            lines.append(f"{key} = {item['input']!r}: {message[:1].lower()}{message[1:]}")
    return "invalid config:\n  " + "\n  ".join(lines)
