"""Named presets (one literal registry) and dotted command-line overrides: how a Config is built."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable
from typing import Any

from rewardflow_trainer.config import (
    Config,
    ConfigError,
    EmaConfig,
    LoraConfig,
    ModelConfig,
    PromptConfig,
    RewardConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    convert_value,
    field_types,
    type_name,
    union_args,
    unknown_key_message,
)

DEFAULT_PRESET = "tiny_jpeg"


def tiny_jpeg() -> Config:
    """The embedded default: tiny random SD3, JPEG compressibility, full fine-tuning, minutes on 2 CPU cores."""
    return Config(
        model=ModelConfig(pretrained=None, tiny_seed=0, resolution=64, mixed_precision="no"),
        sample=SampleConfig(
            num_steps=10,
            eval_num_steps=10,
            guidance_scale=4.5,
            noise_level=0.7,
            batch_size=16,
            group_size=4,
            # Every prompt each epoch (2 batches) and one initial noise per group: JPEG size depends
            # little on this random model's latents, so the gradient needs the less noisy advantages.
            # With 4 groups and independent noise the reward drifted the wrong way over 200 epochs.
            num_groups=8,
            same_latent=True,
            eval_batch_size=8,
        ),
        # What learned on a random model: full fine-tuning, lr 1e-2, one optimizer step per epoch (the
        # two batches accumulated), beta 0, and clip 0.2 since 1e-4 freezes learning as soon as an
        # update is off-policy.
        train=TrainConfig(
            learning_rate=1e-2,
            beta=0.0,
            clip_range=0.2,
            batch_size=16,
            gradient_accumulation_steps=2,
            lora=None,
            ema=EmaConfig(enabled=True),
        ),
        # -kB/5: at 64x64 the raw -kB/500 has a within-group std (~1e-4) as small as the 1e-4 added to it.
        reward=RewardConfig(weights={"jpeg_compressibility": 100.0}, start_local_stack=True, timeout_s=30.0),
        prompts=PromptConfig(train="tiny", eval="tiny_eval"),
        run=RunConfig(epochs=200, seed=42, out_dir="runs/tiny_jpeg", eval_every=50, save_every=50, grid_every=50),
        preset="tiny_jpeg",
    )


def _sd3_reference(preset: str, reward: dict[str, float], beta: float, dataset: str, jsonl: bool = False) -> Config:
    """SD3.5-Medium with the reference's defaults (DESIGN §2): LoRA r32/a64, 48 groups x 24, 10 steps."""
    suffix = "_metadata.jsonl" if jsonl else ".txt"
    return Config(
        model=ModelConfig(pretrained="stabilityai/stable-diffusion-3.5-medium", resolution=512, mixed_precision="fp16"),
        sample=SampleConfig(),
        train=TrainConfig(beta=beta, lora=LoraConfig(rank=32, alpha=64.0)),
        reward=RewardConfig(weights=reward),
        # The reference's prompt files (flow_grpo/dataset/<task>/); point these elsewhere with overrides.
        prompts=PromptConfig(train=f"dataset/{dataset}/train{suffix}", eval=f"dataset/{dataset}/test{suffix}"),
        run=RunConfig(out_dir=f"runs/{preset}", eval_every=60, save_every=60, grid_every=60),
        preset=preset,
    )


def sd3_pickscore() -> Config:
    """SD3.5-M on PickScore (KL beta 0.01)."""
    return _sd3_reference("sd3_pickscore", {"pickscore": 1.0}, beta=0.01, dataset="pickscore")


def sd3_ocr() -> Config:
    """SD3.5-M on OCR accuracy of quoted text (KL beta 0.04)."""
    return _sd3_reference("sd3_ocr", {"ocr": 1.0}, beta=0.04, dataset="ocr")


def sd3_geneval() -> Config:
    """SD3.5-M on GenEval strict correctness, prompts with metadata (KL beta 0.04)."""
    return _sd3_reference("sd3_geneval", {"geneval_strict": 1.0}, beta=0.04, dataset="geneval", jsonl=True)


def sd3_pickscore_fast() -> Config:
    """CFG-free fast variant: CPS noise 0.8, an SDE window of 3 steps in (0, 5), clip 1e-5, no KL."""
    config = _sd3_reference("sd3_pickscore_fast", {"pickscore": 1.0}, beta=0.0, dataset="pickscore")
    config.sample = dataclasses.replace(
        config.sample, sde_type="cps", noise_level=0.8, sde_window=(3, 0, 5), cfg=False, guidance_scale=1.0
    )
    config.train.clip_range = 1e-5
    return config


PRESETS: dict[str, Callable[[], Config]] = {
    "tiny_jpeg": tiny_jpeg,
    "sd3_pickscore": sd3_pickscore,
    "sd3_ocr": sd3_ocr,
    "sd3_geneval": sd3_geneval,
    "sd3_pickscore_fast": sd3_pickscore_fast,
}


def preset(name: str) -> Config:
    """A fresh Config for a named preset; ConfigError lists the valid names."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]()


def build_config(preset_name: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Preset (default: the embedded tiny_jpeg) + `key=value` overrides, not yet validated."""
    return apply_overrides(preset(preset_name or DEFAULT_PRESET), list(overrides))


_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _parse_text(text: str, hint: Any, path: str) -> Any:
    """Parse one command-line value with the field's type."""
    args = union_args(hint)
    if args is not None:
        if text.strip().lower() in ("none", "null") and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:
            return _parse_text(text, options[0], path)
        return convert_value(json.loads(text), hint, path)
    origin = typing.get_origin(hint)
    try:
        if dataclasses.is_dataclass(hint) or origin is dict:
            return convert_value(json.loads(text), hint, path)
        if origin is tuple or origin is list:
            if text.lstrip().startswith("["):
                return convert_value(json.loads(text), hint, path)
            items = typing.get_args(hint)
            variadic = origin is list or (len(items) == 2 and items[1] is Ellipsis)
            pieces = [piece.strip() for piece in text.split(",") if piece.strip()]
            if not variadic and len(pieces) != len(items):
                raise ConfigError(f"{path} = {text!r}: expected {len(items)} comma-separated values")
            parsed = [_parse_text(x, items[0] if variadic else items[i], f"{path}[{i}]") for i, x in enumerate(pieces)]
            return convert_value(parsed, hint, path)
        if hint is bool:
            lowered = text.strip().lower()
            if lowered in _TRUE or lowered in _FALSE:
                return lowered in _TRUE
            raise ConfigError(f"{path} = {text!r}: expected one of {_TRUE + _FALSE}")
        if hint is int:
            return int(text)
        if hint is float:
            return float(text)
        if hint is str:
            return text
    except (ValueError, json.JSONDecodeError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"{path} = {text!r}: expected {type_name(hint)} ({error})") from None
    raise ConfigError(f"{path}: unsupported config type {type_name(hint)}")


def config_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key a dataclass config accepts (nested dataclasses expanded)."""
    keys = []
    for name, hint in field_types(cls).items():
        key = prefix + name
        keys.append(key)
        nested = [a for a in (union_args(hint) or (hint,)) if dataclasses.is_dataclass(a)]
        if nested:
            keys.extend(config_keys(nested[0], key + "."))
    return keys


def describe(config: Config) -> str:
    """Every key with its current value and help line, e.g. for `rewardflow train --show-config`."""
    lines = []

    def walk(node: Any, prefix: str) -> None:
        for f in dataclasses.fields(node):
            value = getattr(node, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}{f.name}.")
            else:
                lines.append(f"{prefix}{f.name} = {json.dumps(value)}  # {f.metadata.get('help', '')}")

    walk(config, "")
    return "\n".join(lines)


def apply_override(config: Config, assignment: str) -> Config:
    """Apply one `dotted.key=value` in place (value parsed with the field's type); returns config.

    A key into a mapping adds or replaces one entry (`reward.weights.pickscore=1.0`); `=None` removes it.
    """
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected key=value, e.g. train.learning_rate=1e-3")
    key, text = (part.strip() for part in assignment.split("=", 1))
    parts = key.split(".")
    node: Any = config
    for depth, name in enumerate(parts[:-1]):
        hints = field_types(type(node))
        if name not in hints:
            raise ConfigError(unknown_key_message(key, config_keys()))
        options = union_args(hints[name]) or (hints[name],)
        mapping = next((a for a in options if typing.get_origin(a) is dict), None)
        section = next((a for a in options if dataclasses.is_dataclass(a)), None)
        if mapping is not None and depth == len(parts) - 2:
            entries = getattr(node, name) or {}
            path = ".".join(parts)
            value = _parse_text(text, typing.get_args(mapping)[1] | None, path)
            if value is None:
                entries.pop(parts[-1], None)
            else:
                entries[parts[-1]] = value
            setattr(node, name, entries)
            return config
        if section is None:
            raise ConfigError(f"override {key!r}: {'.'.join(parts[: depth + 1])} has no sub-keys")
        if getattr(node, name) is None:
            setattr(node, name, section())
        node = getattr(node, name)
    hints = field_types(type(node))
    if parts[-1] not in hints:
        raise ConfigError(unknown_key_message(key, config_keys()))
    setattr(node, parts[-1], _parse_text(text, hints[parts[-1]], key))
    return config


def apply_overrides(config: Config, assignments: list[str]) -> Config:
    """Apply `key=value` overrides in order (later wins)."""
    for assignment in assignments:
        apply_override(config, assignment)
    return config
