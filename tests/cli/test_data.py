"""`rewardflow data`: seeded generation into the folder the presets read, the catalog listing, fetch without a
network (one line: what to download, where to put it), and the presets' missing-file error naming the command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from rewardflow_ocr.target import normalize, quoted_text

_SCRIPT = Path(sys.executable).with_name("rewardflow")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rewardflow.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rewardflow(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REWARDFLOW_") and k.upper() != "NO_PROXY"}
    return subprocess.run([*COMMAND, *args], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=300)


def targets(path: Path) -> list[str]:
    """The OCR reward's target (normalized quoted text) of every prompt in a file."""
    prompts = path.read_text().splitlines()
    assert all(quoted_text(p) for p in prompts), "every prompt quotes a text"
    return [normalize(quoted_text(p) or "") for p in prompts]


def test_generate_ocr_writes_disjoint_seeded_splits_where_sd3_ocr_reads(tmp_path: Path) -> None:
    result = rewardflow(tmp_path, "data", "generate", "ocr", "--n", "400", "--n-test", "40", "--seed", "7")
    assert result.returncode == 0, result.stderr
    train, test = tmp_path / "dataset" / "ocr" / "train.txt", tmp_path / "dataset" / "ocr" / "test.txt"
    assert result.stdout.splitlines() == ["dataset/ocr/train.txt: 400 prompts", "dataset/ocr/test.txt: 40 prompts"]
    train_targets, test_targets = targets(train), targets(test)
    assert len(set(train.read_text().splitlines())) == 400 and len(set(test_targets)) == 40
    assert not set(train_targets) & set(test_targets), "no test text is trained on"
    again = rewardflow(tmp_path, "data", "generate", "ocr", "--n", "400", "--n-test", "40", "--seed", "7", "--out", "b")
    assert again.returncode == 0 and "point prompts.train and prompts.eval at b/" in again.stdout
    assert (tmp_path / "b" / "train.txt").read_text() == train.read_text()
    assert (tmp_path / "b" / "test.txt").read_text() == test.read_text()
    other = rewardflow(tmp_path, "data", "generate", "ocr", "--n", "400", "--n-test", "40", "--seed", "8", "--out", "c")
    assert other.returncode == 0 and (tmp_path / "c" / "test.txt").read_text() != test.read_text()
    listing = rewardflow(tmp_path, "data", "list")
    lines = [line for line in listing.stdout.splitlines()[1:] if not line.startswith("presets with")]
    rows = {line.split()[0]: line.split() for line in lines}
    assert rows["ocr"][2] == "present" and rows["ocr"][3] == "sd3_ocr"
    assert rows["pickscore"][2] == "missing" and "sd3_pickscore," in rows["pickscore"]


def test_fetch_without_a_network_says_what_to_download_and_where(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # a proxy nobody listens on: GitHub is unreachable
    result = rewardflow(tmp_path, "data", "fetch", "pickscore", HTTPS_PROXY=closed, HTTP_PROXY=closed)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    raw = "https://raw.githubusercontent.com/yifan123/flow_grpo/main/dataset/pickscore"
    assert line.startswith("rewardflow: error: cannot fetch pickscore: raw.githubusercontent.com is unreachable (")
    assert line.endswith(f"download {raw}/train.txt and {raw}/test.txt into dataset/pickscore/ (train.txt, test.txt)")
    hub = rewardflow(tmp_path, "data", "fetch", "hps", HF_HUB_OFFLINE="1")
    assert hub.returncode == 2
    [line] = hub.stderr.strip().splitlines()
    assert line.startswith("rewardflow: error: cannot fetch hps: HF_HUB_OFFLINE=1; download https://huggingface.co/")
    assert "benchmark/anime.json" in line and line.endswith("to dataset/hps/test.txt")
    assert not (tmp_path / "dataset").exists()


@pytest.mark.slow
def test_a_preset_missing_its_prompt_files_names_the_command(tmp_path: Path) -> None:
    result = rewardflow(tmp_path, "train", "--preset", "sd3_pickscore")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (
        f"prompts.train = 'dataset/pickscore/train.txt': expected an existing file (not found from {tmp_path}); "
        "`rewardflow data fetch pickscore` writes it"
    ) in result.stderr
