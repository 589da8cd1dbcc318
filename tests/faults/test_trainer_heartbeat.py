"""The trainer's heartbeat file: atomic phases, and the liveness check a Kubernetes exec probe runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from rewardflow_trainer.heartbeat import Heartbeat, check, main, read_heartbeat


def test_each_beat_replaces_the_file_whole_with_phase_epoch_and_time(tmp_path: Path) -> None:
    beat = Heartbeat.of_run(tmp_path, main_process=True)
    before = time.time()
    beat.beat("sampling", 3)
    record = read_heartbeat(tmp_path / "heartbeat.json")
    assert (record["phase"], record["epoch"]) == ("sampling", 3) and before <= record["time"] <= time.time()
    beat.beat("checkpointing", 4)
    assert read_heartbeat(tmp_path / "heartbeat.json")["phase"] == "checkpointing"
    assert [p.name for p in tmp_path.iterdir()] == ["heartbeat.json"]  # no temporary file left behind


def test_other_ranks_write_nothing_and_unknown_phases_are_refused(tmp_path: Path) -> None:
    beat = Heartbeat.of_run(tmp_path, main_process=False)
    beat.beat("training", 0)
    assert not (tmp_path / "heartbeat.json").exists()
    with pytest.raises(ValueError, match="heartbeat phase 'napping': expected one of starting, sampling"):
        beat.beat("napping", 0)


def test_watch_records_done_or_the_failure(tmp_path: Path) -> None:
    beat = Heartbeat.of_run(tmp_path, main_process=True)
    with beat.watch(lambda: 2):
        beat.beat("training", 1)
    assert read_heartbeat(tmp_path / "heartbeat.json")["phase"] == "done"
    with pytest.raises(RuntimeError), beat.watch(lambda: 5):
        raise RuntimeError("service gone")
    record = read_heartbeat(tmp_path / "heartbeat.json")
    assert (record["phase"], record["epoch"], record["error"]) == ("failed", 5, "RuntimeError: service gone")


def test_the_liveness_check_fails_when_stale_failed_or_missing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "heartbeat.json"
    assert "no heartbeat yet" in (check(path, 60) or "")
    Heartbeat(path).beat("scoring", 7)
    assert check(path, 60) is None
    assert main([str(path), "--max-age", "60"]) == 0
    assert json.loads(capsys.readouterr().out)["phase"] == "scoring"
    stale = check(path, 60, now=time.time() + 120)
    assert stale is not None and "phase 'scoring' of epoch 7" in stale
    path.write_text(json.dumps({"phase": "failed", "epoch": 7, "time": time.time(), "error": "boom"}))
    assert main([str(path), "--max-age", "60"]) == 1
    assert "the run failed in epoch 7 (boom)" in capsys.readouterr().err
