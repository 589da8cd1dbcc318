"""Pretraining of the shapes model: a few-step run loads through both loaders, resume is exact, the shipped model."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from rewardflow_geneval.shapes_detector import judge
from rewardflow_trainer.models import Guidance, SD3Family, load_family
from rewardflow_trainer.pretrain.cli import main
from rewardflow_trainer.pretrain.data import ShapesData
from rewardflow_trainer.pretrain.model import build_tokenizers
from rewardflow_trainer.pretrain.run import Budget, Interrupted, Settings, pretrain
from rewardflow_trainer.pretrain.stages import Hyper
from rewardflow_trainer.sampling import sample_eval
from safetensors.torch import load_file

SHIPPED = Path(__file__).parents[2] / "trainer" / "rewardflow_trainer" / "weights" / "shapes-sd3"
SMALL = Hyper(batch=4, vae_batch=4, warmup=2)


def _settings(out: Path, vae_steps: int = 2, steps: int = 3) -> Settings:
    return Settings(out=out, vae=Budget(steps=vae_steps), transformer=Budget(steps=steps), hyper=SMALL)


def _pipeline_images(folder: Path, prompts: list[str], seeds: list[int], steps: int, scale: float) -> np.ndarray:
    pipe = StableDiffusion3Pipeline.from_pretrained(str(folder), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    output = pipe(
        prompt=prompts,
        num_inference_steps=steps,
        guidance_scale=scale,
        height=64,
        width=64,
        max_sequence_length=pipe.tokenizer_3.model_max_length,
        generator=[torch.Generator().manual_seed(s) for s in seeds],
        output_type="np",
    )
    return (np.asarray(output.images) * 255).round().astype(np.uint8)


def test_every_word_of_the_shapes_prompts_is_one_token_of_each_tokenizer() -> None:
    data = ShapesData.load()
    clip, _, t5 = build_tokenizers(data.words())
    for word in data.words():
        assert len(clip(word, add_special_tokens=False).input_ids) == 1, word
        assert t5(word, add_special_tokens=False).input_ids != [t5.unk_token_id], word
    longest = max(len(clip(e["prompt"]).input_ids) for e in data.train + data.test)
    assert longest <= clip.model_max_length == t5.model_max_length == 16  # nothing is cut


def test_a_few_steps_write_a_diffusers_folder_that_both_loaders_sample(tmp_path: Path, one_thread: None) -> None:
    args = ["shapes", "--out", str(tmp_path), "--vae-steps", "2", "--steps", "3", "--batch", "4", "--vae-batch", "4"]
    assert main([*args, "--threads", "1"]) == 0
    folder = tmp_path / "model"
    log = json.loads((tmp_path / "log.json").read_text())
    assert log["stages"]["vae"]["steps"] == 2 and log["stages"]["transformer"]["steps"] == 3
    assert (tmp_path / "loss_curve.png").stat().st_size > 1000
    test_prompts = (folder / "prompts" / "test_metadata.jsonl").read_text().splitlines()
    train_prompts = {json.loads(line)["prompt"] for line in (folder / "prompts" / "train_metadata.jsonl").open()}
    assert len(test_prompts) == 21 and len(train_prompts) == 105
    assert not train_prompts & {json.loads(line)["prompt"] for line in test_prompts}

    family = SD3Family.from_pretrained(folder, dtype=torch.float32, device="cpu", resolution=64)
    assert family.max_sequence_length == 16  # read from tokenizer_3's model_max_length
    assert family.transformer.dtype == torch.float32  # stored float16, loaded as asked
    prompts = ["a photo of a red circle", "a photo of two squares"]
    trajectory = sample_eval(family, prompts, num_steps=2, guidance=Guidance(scale=3.0), latent_seeds=[0, 1])
    assert trajectory.images.shape == (2, 64, 64, 3) and trajectory.images.dtype == np.uint8
    images = _pipeline_images(folder, prompts, [0, 1], steps=2, scale=3.0)
    assert images.shape == (2, 64, 64, 3)
    # same seeds, same schedule, same text path: the two samplers draw the same pictures
    assert np.abs(images.astype(int) - trajectory.images.astype(int)).max() <= 2


def test_rewardflow_pretrain_is_this_command(capsys: pytest.CaptureFixture[str]) -> None:
    from rewardflow.cli import main as rewardflow_main

    with pytest.raises(SystemExit) as exit_info:
        rewardflow_main(["pretrain", "shapes", "--help"])
    assert exit_info.value.code == 0
    assert "usage: rewardflow pretrain shapes" in capsys.readouterr().out


def test_a_stopped_run_resumes_where_it_stopped_with_the_same_data(tmp_path: Path, one_thread: None) -> None:
    straight = pretrain(_settings(tmp_path / "straight", steps=4)).parent
    resumed = tmp_path / "resumed"
    stops = {("vae", 0), ("transformer", 1)}

    def stop_once(stage: str, step: int, _loss: float) -> None:
        if (stage, step) in stops:
            stops.discard((stage, step))
            signal.raise_signal(signal.SIGTERM)

    with pytest.raises(Interrupted):
        pretrain(_settings(resumed, steps=4), on_step=stop_once)
    state = json.loads((resumed / "checkpoint" / "state.json").read_text())
    assert state["stage"] == "vae" and state["steps"]["vae"] == 1
    with pytest.raises(FileExistsError):
        pretrain(_settings(resumed, steps=4))  # a checkpoint is never overwritten without --resume
    with pytest.raises(Interrupted):
        pretrain(_settings(resumed, steps=4), resume=True, on_step=stop_once)
    state = json.loads((resumed / "checkpoint" / "state.json").read_text())
    assert state["stage"] == "transformer" and state["steps"]["transformer"] == 2
    pretrain(_settings(resumed, steps=4), resume=True)

    logs = [json.loads((run / "log.json").read_text())["stages"] for run in (straight, resumed)]
    for stage in ("vae", "transformer"):  # same batches in the same order: the same losses, step for step
        assert logs[1][stage]["losses"] == logs[0][stage]["losses"]
    weights = [load_file(run / "checkpoint" / "transformer.safetensors") for run in (straight, resumed)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])

    pretrain(_settings(resumed, steps=5), resume=True)  # a finished run given a larger budget trains on
    assert json.loads((resumed / "log.json").read_text())["stages"]["transformer"]["steps"] == 5
    args = ["shapes", "--out", str(resumed), "--seed", "1", "--resume", "--vae-steps", "2", "--steps", "5"]
    assert main([*args, "--batch", "4", "--vae-batch", "4", "--threads", "1"]) == 2  # another seed is refused
    assert json.loads((resumed / "checkpoint" / "state.json").read_text())["identity"]["seed"] == 0


def test_the_shipped_model_loads_samples_and_follows_prompts(one_thread: None) -> None:
    size = sum(f.stat().st_size for f in SHIPPED.rglob("*") if f.is_file())
    assert size <= 25 * 2**20
    family = load_family("sd3", SHIPPED, resolution=64)
    assert isinstance(family, SD3Family) and family.max_sequence_length == 16
    assert family.scheduler.config.shift == 3.0
    sampling = json.loads((SHIPPED / "sampling.json").read_text())
    guidance, steps = sampling["guidance_scale"], sampling["num_inference_steps"]
    entries = 2 * [json.loads(line) for line in (SHIPPED / "prompts" / "test_metadata.jsonl").open()]
    prompts, seeds = [e["prompt"] for e in entries], list(range(len(entries)))
    images = sample_eval(family, prompts, num_steps=steps, guidance=Guidance(scale=guidance), latent_seeds=seeds).images
    assert images.shape == (42, 64, 64, 3)
    passed = [judge(image, entry).strict for image, entry in zip(images, entries, strict=True)]
    assert sum(passed) >= 3  # held-out prompts; untrained weights pass none (README: the full measurement)
    piped = _pipeline_images(SHIPPED, prompts[:4], seeds[:4], steps, guidance)
    assert np.abs(piped.astype(int) - images[:4].astype(int)).max() <= 2  # diffusers draws the same pictures
