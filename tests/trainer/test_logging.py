"""Run logger: JSONL per epoch (flushed, NaN-safe), tensorboard, main-process only, wandb opt-in."""

from __future__ import annotations

import builtins
import json

import numpy as np
import pytest
import torch
from rewardflow_trainer.logging import METRICS_FILE, RunLogger, read_metrics


def test_one_flushed_json_line_per_epoch_and_tensorboard_events(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log(0, {"reward_mean": np.float32(-1.5), "reward_std": torch.tensor(0.25), "kl": float("nan")})
    # flushed: readable while the logger is still open (a crashed run keeps its curve)
    lines = (tmp_path / METRICS_FILE).read_text().splitlines()
    assert json.loads(lines[0]) == {"epoch": 0, "reward_mean": -1.5, "reward_std": 0.25, "kl": None}
    logger.log(1, {"reward_mean": -1.0, "eval/reward_mean": -0.5})
    logger.log_image(1, "samples", np.zeros((8, 8, 3), np.uint8))
    logger.close()
    logger.close()
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [0, 1]
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    assert [e.value for e in acc.Scalars("reward_mean")] == [-1.5, -1.0]
    assert "kl" not in acc.Tags()["scalars"]  # a NaN is not plotted as a number


def test_other_processes_write_nothing(tmp_path):
    with RunLogger(tmp_path / "rank1", is_main=False) as logger:
        logger.log(0, {"reward_mean": 1.0})
        logger.log_image(0, "samples", np.zeros((4, 4, 3), np.uint8))
    assert not (tmp_path / "rank1").exists()


def test_resume_drops_records_written_after_the_checkpoint(tmp_path):
    with RunLogger(tmp_path) as logger:
        for epoch in range(5):
            logger.log(epoch, {"reward_mean": float(epoch)})
    with (tmp_path / METRICS_FILE).open("a") as f:
        f.write('{"epoch": 5, "rew')  # killed mid-write
    with RunLogger(tmp_path, start_epoch=3) as logger:
        logger.log(3, {"reward_mean": 30.0})
    assert [(r["epoch"], r["reward_mean"]) for r in read_metrics(tmp_path)] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0)]


def test_wandb_without_the_package_names_the_fix(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(RuntimeError, match=r"run\.wandb = True needs the wandb package"):
        RunLogger(tmp_path, wandb=True)
