"""The embedded default learns: a shortened `rewardflow train` (tiny_jpeg, the jpeg service started as a
local process by the trainer itself) raises its reward by more than the epoch-to-epoch noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rewardflow_trainer.cli import main
from rewardflow_trainer.logging import read_metrics

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TRAIN_EPOCHS = 100
NOISE_EPOCHS = 30
WINDOW = 10  # epochs averaged at the start and at the end


def _rewards(run: Path) -> np.ndarray:
    return np.array([r["reward_mean"] for r in read_metrics(run) if "reward_mean" in r])


def test_embedded_default_beats_its_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # The trainer starts its own jpeg service (rank 0, rewardflow_kit.stack); keep it off any user stack file.
    monkeypatch.setenv("REWARDFLOW_STACK_FILE", str(tmp_path / "stack.json"))
    # The preset as shipped (what `rewardflow train` runs), only shorter and without eval/checkpoints.
    quiet = ["run.progress=false", "run.eval_every=0", "run.save_every=0", "run.grid_every=0"]
    # Noise: the same run with learning switched off (lr 1e-30 moves weights by ~1e-30; 0 is refused by
    # the config), its epoch-to-epoch std of the mean reward.
    assert (
        main(["--epochs", str(NOISE_EPOCHS), "--out", str(tmp_path / "still"), *quiet, "train.learning_rate=1e-30"])
        == 0
    )
    still = _rewards(tmp_path / "still")
    noise = float(still.std())
    assert noise > 0
    assert main(["--epochs", str(TRAIN_EPOCHS), "--out", str(tmp_path / "train"), *quiet]) == 0
    printed = capsys.readouterr().out
    rewards = _rewards(tmp_path / "train")
    start, end = rewards[:WINDOW].mean(), rewards[-WINDOW:].mean()
    gain = end - start
    print(f"noise (std of untrained epoch means) {noise:.4g}; start {start:.4g} end {end:.4g} gain {gain:.4g}")
    # Untrained, the first epochs sample the same model: they match the trained run's start exactly.
    np.testing.assert_array_equal(still[:1], rewards[:1])
    assert gain > 3 * noise, f"gain {gain:.4g} is within 3x the noise {noise:.4g}"
    assert "reward start" in printed
    for name in ("reward_curve.png", "before_after.png", "metrics.jsonl", "summary.json"):
        assert (tmp_path / "train" / name).is_file(), name


def test_shapes_preset_trains_and_writes_genevals_reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped shapes model through `rewardflow train`: the geneval service on the shapes detector is started
    by the trainer, and both held-out evaluations come out in GenEval's layout with its per-tag report."""
    monkeypatch.setenv("REWARDFLOW_STACK_FILE", str(tmp_path / "stack.json"))
    out = tmp_path / "run"
    args = ["--preset", "shapes_geneval", "--epochs", "2", "--out", str(out), "run.progress=false"]
    assert main([*args, "prompts.eval_images_per_prompt=2", "run.eval_every=0", "run.save_every=0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in ("start", "end"):
        assert 0.0 <= summary[f"eval_accuracy_{name}"] <= 1.0
        assert len(summary[f"eval_accuracy_{name}_per_seed"]) == 2
        folder = out / "eval" / name
        report = json.loads((folder / "summary.json").read_text())
        assert report["images"] == 42 and report["prompts"] == 21  # the 21 held-out prompts, 2 seeds each
        assert set(report["tags"]) == {"single_object", "two_object", "counting", "colors", "position", "color_attr"}
        entry = json.loads((folder / "00000" / "metadata.jsonl").read_text())
        assert {"tag", "include", "prompt"} <= set(entry)
        assert sorted(p.name for p in (folder / "00000" / "samples").iterdir()) == ["0000.png", "0001.png"]
        assert (folder / "summary.md").read_text().startswith("# GenEval")
    records = [r for r in read_metrics(out) if "reward_mean" in r]
    assert len(records) == 2 and all(-14.0 <= r["geneval_mean"] <= 1.0 for r in records)
    assert (out / "before_after.png").is_file()
