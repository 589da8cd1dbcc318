"""Config: reference defaults, presets, validation messages, overrides, JSON round trip."""

from __future__ import annotations

import dataclasses
import json

import pytest
from rewardflow_trainer.config import Config, ConfigError, LoraConfig
from rewardflow_trainer.presets import PRESETS, apply_override, build_config, config_keys, describe, preset


def test_defaults_are_the_reference_values():
    config = Config()
    s, t = config.sample, config.train
    assert (s.num_steps, s.eval_num_steps, s.guidance_scale, s.noise_level) == (10, 40, 4.5, 0.7)
    assert (s.group_size, s.num_groups, s.sde_type, s.cfg, s.detach_uncond) == (24, 48, "sde", True, False)
    assert (t.learning_rate, t.adam_betas, t.weight_decay, t.adam_eps) == (3e-4, (0.9, 0.999), 1e-4, 1e-8)
    assert (t.max_grad_norm, t.clip_range, t.beta, t.timestep_fraction) == (1.0, 1e-4, 0.04, 0.99)
    assert (t.adv_clip_max, t.global_std, t.ema.decay, t.ema.update_every) == (5.0, True, 0.9, 8)
    assert t.lora == LoraConfig(rank=32, alpha=64.0)
    assert "to_add_out" in t.lora.target_modules and len(t.lora.target_modules) == 8


def test_every_field_has_a_help_line():
    def walk(cls):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            if dataclasses.is_dataclass(f.default_factory if callable(f.default_factory) else None):
                walk(f.default_factory)

    walk(Config)
    assert "train.lora.rank" in config_keys() and "run.seed" in config_keys()


def test_mutable_defaults_are_not_shared():
    a, b = Config(), Config()
    a.reward.weights["x"] = 1.0
    a.train.lora.rank = 4
    assert "x" not in b.reward.weights and b.train.lora.rank == 32


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_and_round_trips_through_json(name, tmp_path):
    config = preset(name).validate(check_paths=False)
    assert config.preset == name
    path = config.save(tmp_path / "config.json")
    assert Config.load(path) == config


def test_tiny_jpeg_is_the_embedded_default_that_learns():
    config = build_config()
    assert config.preset == "tiny_jpeg" and config.model.pretrained is None
    assert config.train.lora is None and config.train.learning_rate == 1e-2 and config.train.beta == 0.0
    assert config.train.clip_range == 0.2 and config.sample.num_groups * config.sample.group_size == 32
    assert config.sample.same_latent
    # Two sampling batches per epoch, accumulated into one optimizer step.
    assert config.sample.batches_per_epoch(world_size=1) == 2 and config.train.accumulation_steps(1) == 2
    assert config.reward.weights == {"jpeg_compressibility": 100.0} and config.model.resolution == 64
    config.validate()  # built-in prompt sets: no file needed


def test_fast_preset_uses_a_cps_window_without_cfg():
    s = preset("sd3_pickscore_fast").sample
    assert (s.sde_type, s.noise_level, s.sde_window, s.cfg) == ("cps", 0.8, (3, 0, 5), False)
    assert s.num_train_timesteps() == 3 and preset("sd3_pickscore_fast").train.clip_range == 1e-5


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ConfigError, match=r"tiny_jpeg.*sd3_pickscore"):
        preset("sd3_pikscore")


def test_overrides_parse_with_the_field_type():
    config = build_config(
        "tiny_jpeg",
        [
            "train.learning_rate=1e-3",
            "reward.weights.pickscore=1.0",
            "sample.num_steps=8",
            "sample.cfg=false",
            "sample.sde_window=2,0,8",
            "train.adam_betas=[0.8, 0.99]",
            "model.pretrained=some/model",
            "reward.endpoints.jpeg=http://127.0.0.1:1,http://127.0.0.1:2",
            "train.lora.rank=8",
            "train.gradient_accumulation_steps=None",
        ],
    )
    assert config.train.learning_rate == 1e-3 and isinstance(config.sample.num_steps, int)
    assert config.reward.weights == {"jpeg_compressibility": 100.0, "pickscore": 1.0}
    assert config.sample.cfg is False and config.sample.sde_window == (2, 0, 8)
    assert config.train.adam_betas == (0.8, 0.99) and config.model.pretrained == "some/model"
    assert config.reward.endpoints == {"jpeg": ["http://127.0.0.1:1", "http://127.0.0.1:2"]}
    assert config.train.lora == LoraConfig(rank=8) and config.train.gradient_accumulation_steps is None
    apply_override(config, "reward.weights.jpeg_compressibility=None")
    apply_override(config, "train.lora=none")
    assert config.reward.weights == {"pickscore": 1.0} and config.train.lora is None


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.learnin_rate=1", "unknown config key 'train.learnin_rate'; did you mean train.learning_rate"),
        ("sample.num_steps=ten", "sample.num_steps = 'ten': expected int"),
        ("sample.cfg=maybe", "sample.cfg = 'maybe': expected one of"),
        ("sample.sde_window=1,2", "expected 3 comma-separated values"),
        ("train.learning_rate", "expected key=value"),
        ("run.seed.x=1", "run.seed has no sub-keys"),
    ],
)
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ConfigError) as info:
        build_config("tiny_jpeg", [assignment])
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.clip_range=0", "train.clip_range = 0.0: expected > 0"),
        ("model.family=flux9", "model.family = 'flux9': expected one of ['sd3']"),
        ("model.mixed_precision=fp8", "model.mixed_precision = 'fp8': expected one of ('no', 'fp16', 'bf16')"),
        ("sample.group_size=1", "sample.group_size = 1: expected >= 2"),
        ("sample.sde_type=ode", "sample.sde_type = 'ode'"),
        ("sample.sde_window=3,8,10", "sample.sde_window = (3, 8, 10): expected (size, lo, hi)"),
        ("sample.num_batches_per_epoch=3", "sample.num_batches_per_epoch = 3"),
        ("train.timestep_fraction=1.5", "train.timestep_fraction = 1.5: expected in (0, 1]"),
        ("reward.weights={}", "reward.weights = {}: expected at least one reward"),
        ("reward.weights.Pick=1", "reward.weights.Pick = 1.0: expected a reward name"),
        ("reward.weights.jpeg=nan", "reward.weights.jpeg = nan: expected a finite number"),
        ("reward.endpoints.other=http://x", "expected URLs for service 'jpeg'"),
        ("prompts.train=prompts.csv", "prompts.train = 'prompts.csv': expected a built-in prompt set"),
        ("prompts.eval=missing.jsonl", "prompts.eval = 'missing.jsonl': expected an existing file"),
        ("train.ema.decay=1.0", "train.ema.decay = 1.0: expected in [0, 1)"),
        ("run.resume=/nonexistent/ckpt", "run.resume = '/nonexistent/ckpt'"),
    ],
)
def test_validation_names_field_value_and_expectation(assignment, message):
    config = build_config("tiny_jpeg", [assignment])
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert message in str(info.value)


def test_validation_reports_every_problem_at_once():
    config = build_config("tiny_jpeg", ["train.clip_range=0", "sample.num_steps=0"])
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert "train.clip_range" in str(info.value) and "sample.num_steps" in str(info.value)


def test_grouping_must_tile_the_ranks():
    sample = Config().sample  # 48 x 24 = 1152 images, batch 8
    assert sample.batches_per_epoch(8) == 18
    with pytest.raises(ConfigError, match="must be a multiple of world_size\\*batch_size = 5\\*8"):
        sample.batches_per_epoch(5)


def test_saved_config_redacts_the_api_key(tmp_path):
    config = build_config("tiny_jpeg", ["reward.api_key=secret"])
    text = config.save(tmp_path / "config.json").read_text()
    assert "secret" not in text and json.loads(text)["reward"]["api_key"] is None
    assert config.to_dict(redact=False)["reward"]["api_key"] == "secret"


def test_from_dict_rejects_unknown_and_mistyped_keys():
    data = Config().to_dict()
    data["train"]["lr"] = 1.0
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lr'"):
        Config.from_dict(data)
    data = Config().to_dict()
    data["sample"]["num_steps"] = "10"
    with pytest.raises(ConfigError, match=r"sample\.num_steps = '10': expected an integer"):
        Config.from_dict(data)


def test_describe_lists_every_key_with_value_and_help():
    text = describe(build_config("tiny_jpeg"))
    assert "train.learning_rate = 0.01  # AdamW learning rate" in text
    assert 'reward.weights = {"jpeg_compressibility": 100.0}' in text and "train.lora = null" in text
