"""Config: reference defaults, presets, validation messages, overrides, JSON round trip."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel
from rewardflow_trainer.config import Config, ConfigError, LoraConfig, config_keys
from rewardflow_trainer.presets import PRESETS, apply_overrides, build_config, describe, preset


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
    def walk(model: BaseModel) -> None:
        for name, info in type(model).model_fields.items():
            assert info.description, f"{type(model).__name__}.{name} has no help"
            if isinstance(getattr(model, name), BaseModel):
                walk(getattr(model, name))

    walk(Config())
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
            "reward.endpoints.pickscore=[http://127.0.0.1:3]",
            "train.lora.rank=8",
            "train.gradient_accumulation_steps=None",
        ],
    )
    assert config.train.learning_rate == 1e-3 and isinstance(config.sample.num_steps, int)
    assert config.reward.weights == {"jpeg_compressibility": 100.0, "pickscore": 1.0}
    assert config.sample.cfg is False and config.sample.sde_window == (2, 0, 8)
    assert config.train.adam_betas == (0.8, 0.99) and config.model.pretrained == "some/model"
    assert config.reward.endpoints["jpeg"] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert config.train.lora == LoraConfig(rank=8) and config.train.gradient_accumulation_steps is None
    config = apply_overrides(config, ["reward.weights.jpeg_compressibility=None", "train.lora=none"])
    assert config.reward.weights == {"pickscore": 1.0} and config.train.lora is None


def test_typed_values_skip_the_text_parsing():
    config = build_config("tiny_jpeg", values={"model.pretrained": "123", "run.out_dir": "runs/yes: no"})
    assert config.model.pretrained == "123" and config.run.out_dir == "runs/yes: no"


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("train.learnin_rate=1", "unknown config key 'train.learnin_rate'; did you mean 'train.learning_rate'?"),
        ("sample.num_stepz=1", "unknown config key 'sample.num_stepz'; did you mean 'sample.num_steps'?"),
        ("sample.num_steps=ten", "sample.num_steps = 'ten': input should be a valid integer"),
        ("sample.cfg=maybe", "sample.cfg = 'maybe': input should be a valid boolean"),
        ("sample.sde_window=1,2", "sample.sde_window.2 = ['1', '2']: field required"),
        ("train.learning_rate", "expected key=value"),
        ("run.seed.x=1", "run.seed has no sub-keys"),
    ],
)
def test_bad_overrides_name_the_key(assignment, message):
    with pytest.raises(ConfigError) as info:
        build_config("tiny_jpeg", [assignment])
    assert message in str(info.value)


# Every rule of the former hand-written validator, with the message that names the field and the expectation.
RULES = [
    ("model.resolution=100", "model.resolution = 100: input should be a multiple of 16"),
    ("model.resolution=0", "model.resolution = 0: input should be greater than 0"),
    ("model.mixed_precision=fp8", "model.mixed_precision = 'fp8': input should be 'no', 'fp16' or 'bf16'"),
    ("sample.num_steps=0", "sample.num_steps = 0: input should be greater than or equal to 1"),
    ("sample.eval_num_steps=0", "sample.eval_num_steps = 0: input should be greater than or equal to 1"),
    ("sample.guidance_scale=-1", "sample.guidance_scale = -1: input should be greater than or equal to 0"),
    ("sample.guidance_scale=inf", "sample.guidance_scale = 'inf': input should be a finite number"),
    ("sample.sde_type=ode", "sample.sde_type = 'ode': input should be 'sde' or 'cps'"),
    ("sample.noise_level=-0.1", "sample.noise_level = -0.1: input should be greater than or equal to 0"),
    (["sample.sde_type=cps", "sample.noise_level=1.5"], "sample.noise_level = 1.5: expected in [0, 1] for cps"),
    ("sample.sde_window=3,8,10", "sample.sde_window = (3, 8, 10): expected (size, lo, hi) with 0 <= lo < hi"),
    ("sample.batch_size=0", "sample.batch_size = 0: input should be greater than or equal to 1"),
    ("sample.eval_batch_size=0", "sample.eval_batch_size = 0: input should be greater than or equal to 1"),
    ("sample.group_size=1", "sample.group_size = 1: input should be greater than or equal to 2"),
    ("sample.num_groups=0", "sample.num_groups = 0: input should be greater than or equal to 1"),
    ("sample.num_batches_per_epoch=0", "sample.num_batches_per_epoch = 0: input should be greater than or equal"),
    ("sample.num_batches_per_epoch=3", "sample.num_batches_per_epoch = 3: expected a value with num_groups"),
    ("train.learning_rate=0", "train.learning_rate = 0: input should be greater than 0"),
    ("train.adam_betas=0.5,1.5", "train.adam_betas = '0.5,1.5': expected two values in [0, 1)"),
    ("train.weight_decay=-1", "train.weight_decay = -1: input should be greater than or equal to 0"),
    ("train.adam_eps=0", "train.adam_eps = 0: input should be greater than 0"),
    ("train.max_grad_norm=0", "train.max_grad_norm = 0: input should be greater than 0"),
    ("train.clip_range=0", "train.clip_range = 0: input should be greater than 0"),
    ("train.beta=-0.1", "train.beta = -0.1: input should be greater than or equal to 0"),
    ("train.timestep_fraction=1.5", "train.timestep_fraction = 1.5: input should be less than or equal to 1"),
    ("train.timestep_fraction=0", "train.timestep_fraction = 0: input should be greater than 0"),
    ("train.num_inner_epochs=0", "train.num_inner_epochs = 0: input should be greater than or equal to 1"),
    ("train.batch_size=0", "train.batch_size = 0: input should be greater than or equal to 1"),
    ("train.gradient_accumulation_steps=0", "train.gradient_accumulation_steps = 0: input should be greater"),
    ("train.adv_clip_max=0", "train.adv_clip_max = 0: input should be greater than 0"),
    ("train.lora.rank=0", "train.lora.rank = 0: input should be greater than or equal to 1"),
    ("train.lora.alpha=0", "train.lora.alpha = 0: input should be greater than 0"),
    ("train.lora.target_modules=[]", "train.lora.target_modules = []: tuple should have at least 1 item"),
    ("train.lora.dropout=1", "train.lora.dropout = 1: input should be less than 1"),
    ("train.ema.decay=1.0", "train.ema.decay = 1.0: input should be less than 1"),
    ("train.ema.update_every=0", "train.ema.update_every = 0: input should be greater than or equal to 1"),
    ("reward.weights={}", "reward.weights = {}: dictionary should have at least 1 item"),
    ("reward.weights.Pick=1", "reward.weights.Pick = 1.0: expected a reward name"),
    ("reward.weights.jpeg=nan", "reward.weights.jpeg = 'nan': input should be a finite number"),
    ("reward.endpoints.other=http://x", "reward.weights.jpeg_compressibility = 100.0: expected a reward of one of"),
    ("reward.endpoints.jpeg=ftp://x", "reward.endpoints.jpeg = ['ftp://x']: expected a non-empty list of http(s)://"),
    ("reward.timeout_s=0", "reward.timeout_s = 0: input should be greater than 0"),
    ("reward.max_retries=-1", "reward.max_retries = -1: input should be greater than or equal to 0"),
    ("prompts.train=prompts.csv", "prompts.train = 'prompts.csv': expected a built-in prompt set"),
    ("prompts.eval_limit=0", "prompts.eval_limit = 0: input should be greater than or equal to 1"),
    ("run.epochs=0", "run.epochs = 0: input should be greater than or equal to 1"),
    ("run.eval_every=-1", "run.eval_every = -1: input should be greater than or equal to 0"),
    ("run.save_every=-1", "run.save_every = -1: input should be greater than or equal to 0"),
    ("run.grid_every=-1", "run.grid_every = -1: input should be greater than or equal to 0"),
    ("run.keep_checkpoints=0", "run.keep_checkpoints = 0: input should be greater than or equal to 1"),
    ("run.log_every=0", "run.log_every = 0: input should be greater than or equal to 1"),
    ("run.out_dir=''", "run.out_dir = '': string should have at least 1 character"),
]


@pytest.mark.parametrize(("assignment", "message"), RULES)
def test_validation_names_field_value_and_expectation(assignment, message):
    with pytest.raises(ConfigError) as info:
        build_config("tiny_jpeg", assignment if isinstance(assignment, list) else [assignment])
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("model.family=flux9", "model.family = 'flux9': expected one of ['flux', 'qwen_image', 'sd3']"),
        ("prompts.eval=missing.jsonl", "prompts.eval = 'missing.jsonl': expected an existing file"),
        ("run.resume=/nonexistent/ckpt", "run.resume = '/nonexistent/ckpt': expected an existing checkpoint"),
    ],
)
def test_machine_checks_name_field_value_and_expectation(assignment, message):
    config = build_config("tiny_jpeg", [assignment])  # valid as a value; wrong on this machine
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert message in str(info.value)


def test_assignments_are_validated_and_validate_reruns_cross_section_rules():
    config = build_config("tiny_jpeg", ["train.beta=0.04", "train.timestep_fraction=1.0"])
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        config.sample.num_steps = 0
    config.sample.sde_type = "cps"  # a nested assignment cannot see train.beta ...
    with pytest.raises(ConfigError, match=r"sample\.sde_type = 'cps' with train\.beta = 0\.04"):
        config.validate()  # ... validate() checks the whole config again


def test_validation_reports_every_problem_at_once():
    with pytest.raises(ConfigError) as info:
        build_config("tiny_jpeg", ["train.clip_range=0", "sample.num_steps=0"])
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


def test_build_rejects_unknown_and_mistyped_keys():
    data = Config().to_dict()
    data["train"]["lr"] = 1.0
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.lr'"):
        Config.build(data)
    data = Config().to_dict()
    data["sample"]["num_steps"] = "ten"
    with pytest.raises(ConfigError, match=r"sample\.num_steps = 'ten': input should be a valid integer"):
        Config.build(data)


def test_describe_lists_every_key_with_value_and_help():
    text = describe(build_config("tiny_jpeg"))
    assert "train.learning_rate = 0.01  # AdamW learning rate" in text
    assert 'reward.weights = {"jpeg_compressibility": 100.0}' in text and "train.lora = null" in text


@pytest.mark.parametrize(
    "overrides",
    [
        ["sample.sde_type=cps", "train.beta=0.04", "train.timestep_fraction=1.0"],
        ["sample.sde_type=cps", "train.beta=0.04", "sample.sde_window=2,0,10"],
    ],
)
def test_cps_with_kl_on_the_last_step_is_refused_naming_the_fields(overrides):
    with pytest.raises(ConfigError) as info:
        build_config("tiny_jpeg", overrides)
    text = str(info.value)
    assert "sample.sde_type = 'cps' with train.beta = 0.04 trains the last step" in text
    assert ("train.timestep_fraction = 1.0" in text) or ("sample.sde_window = (2, 0, 10)" in text)


@pytest.mark.parametrize(
    "overrides",
    [
        ["sample.sde_type=cps", "train.beta=0.04", "train.timestep_fraction=0.99"],  # the last step is not trained
        ["sample.sde_type=cps", "train.beta=0.04", "sample.sde_window=2,0,9"],  # the window ends before it
        ["sample.sde_type=cps", "train.beta=0", "train.timestep_fraction=1.0"],  # no KL, no division
        ["sample.sde_type=sde", "train.beta=0.04", "train.timestep_fraction=1.0"],  # the SDE's s is > 0 there
    ],
)
def test_cps_configurations_without_the_zero_variance_kl_are_accepted(overrides):
    build_config("tiny_jpeg", overrides).validate()


def test_the_refused_configuration_really_divides_zero_by_zero():
    import torch
    from rewardflow_trainer.grpo import kl_to_reference
    from rewardflow_trainer.sde import cps_step

    v, x = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    last = cps_step(v, x, torch.tensor(0.1), torch.tensor(0.0), torch.tensor(0.2), torch.tensor(0.7))
    moved = cps_step(v + 0.01, x, torch.tensor(0.1), torch.tensor(0.0), torch.tensor(0.2), torch.tensor(0.7))
    assert torch.all(last.noise_scale == 0)
    assert torch.isnan(kl_to_reference(last.mean, last.mean, last.noise_scale))  # before any update: 0 / 0
    assert torch.isinf(kl_to_reference(moved.mean, last.mean, last.noise_scale))  # after one: x / 0


def test_sd3_geneval_trains_on_the_dense_score():
    assert preset("sd3_geneval").reward.weights == {"geneval": 1.0}


def test_show_config_prints_every_key_and_exits_without_training(capsys):
    from rewardflow_trainer.cli import main

    assert main(["--show-config", "--preset", "sd3_ocr", "train.learning_rate=1e-3", "--epochs", "7"]) == 0
    text = capsys.readouterr().out
    assert "train.learning_rate = 0.001  # AdamW learning rate" in text
    assert "run.epochs = 7" in text and 'reward.weights = {"ocr": 1.0}' in text
    keys = config_keys()
    leaves = [k for k in keys if not any(other.startswith(k + ".") for other in keys)]
    assert [line.split(" = ")[0] for line in text.splitlines()] == leaves


def test_show_config_never_prints_the_api_key(capsys):
    from rewardflow_trainer.cli import main

    assert main(["--show-config", "reward.api_key=s3cret-key"]) == 0
    text = capsys.readouterr().out
    assert "s3cret-key" not in text
    assert 'reward.api_key = "***"' in text


def test_train_help_lists_the_presets(capsys):
    from rewardflow_trainer.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(name in text for name in PRESETS) and "--show-config" in text
