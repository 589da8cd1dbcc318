"""Every unknown name (service, reward, preset, config key, benchmark, prompt set) gets "did you mean" from the
one helper, rewardflow_proto.names.did_you_mean, wherever the user types it: serve, stack, score, eval, train,
data and models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rewardflow_proto.client_policy import resolve_reward
from rewardflow_proto.names import close_matches, did_you_mean

from rewardflow.cli import main

_SCRIPT = Path(sys.executable).with_name("rewardflow")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rewardflow.cli"]


def test_the_helper_suggests_the_close_name_and_lists_a_short_set() -> None:
    assert did_you_mean("jepg", ["aesthetic", "jpeg", "ocr"]) == (
        "unknown service 'jepg'; did you mean 'jpeg'? (known services: aesthetic, jpeg, ocr)"
    )
    assert did_you_mean("zzz", ["jpeg", "ocr"], "preset") == "unknown preset 'zzz' (known presets: jpeg, ocr)"
    assert did_you_mean("x", [], "service") == "unknown service 'x' (known services: none)"


def test_the_helper_keeps_only_the_clear_match_and_finds_dotted_keys_by_their_last_part() -> None:
    keys = ["train.learning_rate", "train.clip_range", "train.lora", "sample.num_steps", "sample.noise_level"]
    assert close_matches("train.learnin_rate", keys) == ["train.learning_rate"]
    assert close_matches("learning_rate", keys) == ["train.learning_rate"]
    assert close_matches("sample.learning_rate", keys) == ["train.learning_rate"]
    assert close_matches("JPEG", ["jpeg", "ocr"]) == ["jpeg"]
    many = [f"section.key_{i:03d}" for i in range(40)]
    assert "(known" not in did_you_mean("section.key_01", many, "config key")  # a long list is left out...
    assert "section.key_039" in did_you_mean("zzzz", many, "config key")  # ...unless nothing is close


def test_a_mistyped_reward_of_a_running_service_gets_its_score_key() -> None:
    keys = {"jpeg": ["compressibility", "size_kb"], "ocr": ["score"]}
    with pytest.raises(ValueError, match=r"unknown reward 'jpeg_sise_kb'; did you mean 'jpeg_size_kb'\?"):
        resolve_reward("jpeg_sise_kb", keys)


def test_score_suggests_the_service_not_a_stack_of_the_typo(tmp_path: Path) -> None:
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    env = {**os.environ, "REWARDFLOW_STACK_FILE": str(tmp_path / "stack.json")}
    proc = subprocess.run(
        [*COMMAND, "score", str(image), "--prompt", "p", "--reward", "jepg"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "unknown reward service 'jepg'; did you mean 'jpeg'?" in proc.stderr
    assert "stack up jepg" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["serve", "jepg"], "unknown service 'jepg'; did you mean 'jpeg'?"),
        (["stack", "up", "pickscor"], "unknown service 'pickscor'; did you mean 'pickscore'?"),
        (["eval", "genevl"], "unknown benchmark 'genevl'; did you mean 'geneval'?"),
        (["train", "--preset", "tiny_jepg"], "unknown preset 'tiny_jepg'; did you mean 'tiny_jpeg'?"),
        (["train", "train.learnin_rate=1"], "unknown config key 'train.learnin_rate'; did you mean 'train.learning"),
        (["train", "--show-config", "reward.weights={pickscor: 1}", "reward.endpoints.pickscore=http://h:1"],
         "unknown reward service 'pickscor'; did you mean 'pickscore'?"),
        (["data", "fetch", "pickscor"], "unknown prompt set 'pickscor'; did you mean 'pickscore'?"),
        (["data", "generate", "ocrr"], "unknown prompt set 'ocrr'; did you mean 'ocr'?"),
        (["models", "pull", "clipscor"], "unknown service 'clipscor'; did you mean 'clipscore'?"),
        (["models", "list", "--trainer", "sd3_pikscore"], "unknown preset 'sd3_pikscore'; did you mean 'sd3_pick"),
    ],
)  # fmt: skip
def test_every_kind_of_name_gets_the_same_suggestion(
    argv: list[str], expected: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REWARDFLOW_STACK_FILE", str(tmp_path / "stack.json"))
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err
