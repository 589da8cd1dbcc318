"""Each algorithm runs through `rewardflow train --preset tiny_jpeg --algorithm NAME` for two small epochs against a
real jpeg service: the same loop, logs, evaluation and checkpoint, each algorithm's own figures."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rewardflow_trainer.cli import main
from rewardflow_trainer.logging import read_metrics

pytestmark = pytest.mark.slow

SMALL = [
    "sample.num_steps=4", "sample.eval_num_steps=4", "sample.num_groups=4", "sample.batch_size=8",
    "train.batch_size=8", "prompts.eval_limit=4", "run.progress=false", "run.eval_every=0", "run.grid_every=0",
]  # fmt: skip
FIGURES = {
    "grpo": ("policy_loss", "ratio_mean", "clipfrac"),
    "dpo": ("loss", "winner_err", "loser_err", "implicit_acc"),
    "sft": ("loss",),
    "nft": ("loss", "policy_loss", "old_deviation"),
}


@pytest.mark.parametrize("algorithm", ["grpo", "dpo", "sft", "nft"])
def test_two_epochs_of_each_algorithm(tmp_path: Path, jpeg_url: str, algorithm: str) -> None:
    out = tmp_path / algorithm
    extra = ["train.guard=true"] if algorithm == "grpo" else []
    args = ["--preset", "tiny_jpeg", "--algorithm", algorithm, "--epochs", "2", "--out", str(out)]
    assert main([*args, *SMALL, *extra, f"reward.endpoints.jpeg={jpeg_url}"]) == 0
    records = [r for r in read_metrics(out) if "reward_mean" in r]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        for key in FIGURES[algorithm]:
            assert math.isfinite(record[key]), (key, record)
        assert record["trained_samples"] > 0
    assert records[-1]["global_step"] == 2  # one optimizer step an epoch (2 minibatches, accumulation 2)
    if algorithm == "grpo":  # GRPO-Guard's normalized ratio is exactly 1 before the epoch's first step
        assert records[0]["ratio_dev_on_policy"] == 0.0
    assert (out / "checkpoints" / "epoch-000002" / "diffusers").is_dir()
    assert (out / "summary.json").is_file()
