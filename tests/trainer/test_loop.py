"""The epoch loop end to end on the tiny model against a real jpeg service process."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from rewardflow_trainer.cli import main
from rewardflow_trainer.config import Config
from rewardflow_trainer.logging import read_metrics
from rewardflow_trainer.loop import train
from rewardflow_trainer.presets import build_config

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def small_config(out: Path, url: str, *overrides: str) -> Config:
    """The embedded default, shortened: 2 epochs, no periodic eval/grid/checkpoint, the test's service."""
    config = build_config(
        "tiny_jpeg",
        [
            f"run.out_dir={out}",
            "run.epochs=2",
            "run.progress=false",
            "run.eval_every=0",
            "run.save_every=0",
            "run.grid_every=0",
            # One sampling batch per epoch and no accumulation: the purely on-policy setting.
            "sample.num_groups=4",
            "train.gradient_accumulation_steps=1",
            *overrides,
        ],
    )
    config.reward.endpoints = {"jpeg": [url]}
    return config.validate()


def test_two_epochs_write_the_run_outputs_and_stay_on_policy(tmp_path: Path, jpeg_url: str) -> None:
    config = small_config(tmp_path, jpeg_url)
    result = train(config, config.reward.endpoints)
    records = read_metrics(tmp_path)
    epochs = [r for r in records if "reward_mean" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    for record in epochs:
        # One sampling batch per epoch, trained as one minibatch: the recompute is bit-identical.
        assert record["ratio_dev_on_policy"] == 0.0
        assert record["ratio_mean"] == 1.0
        assert record["clipfrac"] == 0.0
        assert -1.0 < record["jpeg_compressibility_mean"] < 0.0  # -kB/500 of a 64x64 JPEG
        assert record["reward_mean"] == pytest.approx(100 * record["jpeg_compressibility_mean"])
        assert 0.0 <= record["reward_wait_share"] <= 1.0
        assert record["time/reward_wait_s"] <= record["time/epoch_s"]
        assert record["trained_samples"] == 16
        for key in ("reward_std", "policy_loss", "approx_kl", "grad_norm", "zero_std_ratio", "lr"):
            assert key in record
    assert epochs[-1]["global_step"] == 2
    evals = [r["eval/reward_mean"] for r in records if "eval/reward_mean" in r]
    assert len(evals) == 2  # before and after
    for name in (
        "reward_curve.png",
        "before_after.png",
        "grids/epoch-000001.png",
        "grids/epoch-000002.png",
        "config.json",
        "checkpoints/epoch-000002/trainable.safetensors",
    ):
        assert (tmp_path / name).is_file(), name
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["reward_start"] == pytest.approx(epochs[0]["reward_mean"])
    assert summary["reward_end"] == pytest.approx(epochs[-1]["reward_mean"])
    assert result.summary.startswith("reward start ")
    assert "→ end" in result.summary


def test_evaluations_are_written_in_genevals_folder_layout(tmp_path: Path, jpeg_url: str) -> None:
    config = small_config(tmp_path, jpeg_url, "run.epochs=1", "prompts.eval_images_per_prompt=2")
    train(config, config.reward.endpoints)
    for name in ("start", "end"):
        folders = sorted((tmp_path / "eval" / name).iterdir())
        assert [f.name for f in folders] == ["00000", "00001", "00002", "00003"]  # tiny_eval's 4 prompts
        for index, folder in enumerate(folders):
            entry = json.loads((folder / "metadata.jsonl").read_text())
            assert entry["prompt"] == config_prompts_eval()[index]
            assert sorted(p.name for p in (folder / "samples").iterdir()) == ["0000.png", "0001.png"]
    # Two noise seeds per prompt give two different images; the same seed gives the same image at start and end
    # only if training changed nothing, which it did.
    start = tmp_path / "eval" / "start" / "00000" / "samples"
    assert (start / "0000.png").read_bytes() != (start / "0001.png").read_bytes()
    assert not (tmp_path / "eval" / "start" / "summary.json").exists()  # no geneval reward: no GenEval report


def config_prompts_eval() -> list[str]:
    from rewardflow_trainer.prompts import BUILTIN_PROMPT_SETS

    return list(BUILTIN_PROMPT_SETS["tiny_eval"])


def test_lora_run_has_zero_kl_before_its_first_update_and_exports_diffusers_lora(tmp_path: Path, jpeg_url: str) -> None:
    from diffusers import StableDiffusion3Pipeline
    from rewardflow_trainer.models import Guidance, SD3Family

    config = small_config(
        tmp_path,
        jpeg_url,
        "train.lora.rank=4",
        "train.lora.alpha=8",
        "train.beta=0.01",
        "train.learning_rate=1e-2",
        "train.lora.target_modules=to_q,to_k,to_v,to_out.0,proj_out",
        "train.ema.update_every=1",
    )
    train(config, config.reward.endpoints)
    epochs = [r for r in read_metrics(tmp_path) if "reward_mean" in r]
    assert epochs[0]["kl"] == 0.0  # every trained step of epoch 1 precedes its single optimizer step
    assert epochs[1]["kl"] > 0.0
    exported = tmp_path / "checkpoints" / "epoch-000002" / "diffusers"
    assert (exported / "pytorch_lora_weights.safetensors").is_file()
    family = SD3Family.tiny(seed=0)
    embeds = family.encode(["a red cat"])
    latents = family.initial_latents(1, seeds=[0])
    sigma = torch.tensor([0.5])
    base = family.velocity(latents, sigma, embeds, Guidance(4.5, True))
    pipe = StableDiffusion3Pipeline(**family.components())
    pipe.load_lora_weights(exported)  # diffusers' own loader, into the same transformer object
    assert pipe.transformer.peft_config
    tuned = family.velocity(latents, sigma, embeds, Guidance(4.5, True))
    assert not torch.equal(base, tuned)


def test_cli_trains_with_configured_endpoints(tmp_path: Path, jpeg_url: str, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "--epochs",
            "1",
            "--out",
            str(tmp_path),
            f'reward.endpoints.jpeg=["{jpeg_url}"]',
            "run.progress=false",
            "run.eval_every=0",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "reward start" in printed
    assert (tmp_path / "metrics.jsonl").is_file()


def test_cli_rejects_a_bad_override_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["--out", str(tmp_path), "train.learning_rat=1e-3"]) == 2
    assert "train.learning_rat" in capsys.readouterr().err


def test_endpoints_missing_a_needed_service_fail_with_its_name(
    tmp_path: Path, jpeg_url: str, capsys: pytest.CaptureFixture
) -> None:
    code = main(["--epochs", "1", "--out", str(tmp_path), f'reward.endpoints.pickscore=["{jpeg_url}"]'])
    assert code == 2
    err = capsys.readouterr().err
    # The reward that has no endpoint (the default jpeg_compressibility) and the services that were given.
    assert "reward.weights.jpeg_compressibility" in err and "pickscore" in err, err
    assert not (tmp_path / "metrics.jsonl").exists()  # refused before anything ran


def test_bf16_lora_with_gradient_checkpointing_stays_on_policy(tmp_path: Path, jpeg_url: str) -> None:
    # A fresh process: accelerate's mixed-precision state is per process and the other tests use "no". Two
    # sampling batches an epoch, accumulated into one optimizer step, as the preset; 4 denoising steps, not 10.
    argv = [sys.executable, "-m", "rewardflow_trainer.cli", "--epochs", "2", "--out", str(tmp_path),
            f'reward.endpoints.jpeg=["{jpeg_url}"]', "run.progress=false", "run.eval_every=0",
            "sample.num_steps=4", "sample.eval_num_steps=2",
            "model.mixed_precision=bf16", "model.gradient_checkpointing=true", "train.beta=0.01",
            "train.lora.rank=4", "train.lora.alpha=8", "train.lora.target_modules=to_q,to_k,to_v,to_out.0,proj_out",
            ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    epochs = [r for r in read_metrics(tmp_path) if "reward_mean" in r]
    # The rollout and the recompute run the same bf16 autocast ops: still bit-identical on the CPU.
    assert [r["ratio_dev_on_policy"] for r in epochs] == [0.0, 0.0]
    assert epochs[0]["kl"] == 0.0 < epochs[1]["kl"]
    assert all(math.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in epochs)


def test_training_without_noise_is_refused_naming_the_field(
    tmp_path: Path, jpeg_url: str, capsys: pytest.CaptureFixture
) -> None:
    code = main(
        ["--epochs", "1", "--out", str(tmp_path), f'reward.endpoints.jpeg=["{jpeg_url}"]', "sample.noise_level=0"]
    )
    assert code == 2
    assert "sample.noise_level" in capsys.readouterr().err
