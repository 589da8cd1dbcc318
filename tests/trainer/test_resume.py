"""Exact resume: stop after 2 epochs, resume to 4, and land on the same bits as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from rewardflow_trainer.config import Config
from rewardflow_trainer.logging import read_metrics
from rewardflow_trainer.loop import train
from rewardflow_trainer.presets import build_config
from safetensors.torch import load_file

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def _config(out: Path, url: str, epochs: int, *overrides: str) -> Config:
    config = build_config(
        "tiny_jpeg",
        [
            f"run.out_dir={out}",
            f"run.epochs={epochs}",
            "run.progress=false",
            "run.eval_every=0",
            "run.grid_every=0",
            "run.save_every=2",
            "train.ema.update_every=1",  # the EMA moves every step, so its state must resume too
            "sample.num_steps=6",
            *overrides,
        ],
    )
    config.reward.endpoints = {"jpeg": [url]}
    return config.validate()


LORA = ("train.lora.rank=4", "train.lora.alpha=8", "train.lora.target_modules=to_q,to_k,to_v,to_out.0,proj_out")


@pytest.mark.parametrize("extra", [(), LORA], ids=["full", "lora"])
def test_resume_gives_bitwise_the_same_run(tmp_path: Path, jpeg_url: str, extra: tuple[str, ...]) -> None:
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    # Two sampling batches per epoch with accumulation over both: the optimizer, shuffles and masks all matter.
    common = ("sample.batch_size=8", "train.batch_size=8", "train.gradient_accumulation_steps=2", *extra)
    train(_config(straight, jpeg_url, 4, *common), {"jpeg": [jpeg_url]})
    train(_config(stopped, jpeg_url, 2, *common), {"jpeg": [jpeg_url]})
    train(_config(stopped, jpeg_url, 4, *common, f"run.resume={stopped}"), {"jpeg": [jpeg_url]})

    final_a = straight / "checkpoints" / "epoch-000004"
    final_b = stopped / "checkpoints" / "epoch-000004"
    weights_a, weights_b = load_file(final_a / "trainable.safetensors"), load_file(final_b / "trainable.safetensors")
    assert weights_a.keys() == weights_b.keys()
    start = load_file(stopped / "checkpoints" / "epoch-000002" / "trainable.safetensors")
    assert any(not torch.equal(start[k], weights_a[k]) for k in weights_a), "epochs 3-4 changed nothing"
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), f"{key} differs after resume"
    ema_a, ema_b = torch.load(final_a / "ema.pt"), torch.load(final_b / "ema.pt")
    assert all(torch.equal(a, b) for a, b in zip(ema_a["shadow"], ema_b["shadow"], strict=True))
    opt_a, opt_b = torch.load(final_a / "optimizer.pt"), torch.load(final_b / "optimizer.pt")
    for state_a, state_b in zip(opt_a["state"].values(), opt_b["state"].values(), strict=True):
        assert torch.equal(state_a["exp_avg"], state_b["exp_avg"])
    # The same samples were drawn after the resume: the logged rewards agree exactly.
    rewards_a = {r["epoch"]: r["reward_mean"] for r in read_metrics(straight) if "reward_mean" in r}
    rewards_b = {r["epoch"]: r["reward_mean"] for r in read_metrics(stopped) if "reward_mean" in r}
    assert rewards_a == rewards_b
    assert sorted(rewards_b) == [1, 2, 3, 4]
