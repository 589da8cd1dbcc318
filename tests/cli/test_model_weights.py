"""`rewardflow models list|pull` against a temporary Hugging Face cache holding a tiny model (save_pretrained into
the hub cache's layout): what each service and preset needs, what is cached, and the offline refusal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rewardflow_vision.tiny import write_tiny_clip

_SCRIPT = Path(sys.executable).with_name("rewardflow")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "rewardflow.cli"]
COMMIT = "c" * 40


def cache_entry(cache: Path, repo_id: str) -> Path:
    """An empty snapshot of `repo_id` at main in the hub cache's layout (refs/main -> snapshots/<commit>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return repo / "snapshots" / COMMIT


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """clipscore's default CLIP as a tiny random model; half of pickscore's processor repository; nothing else."""
    root = tmp_path_factory.mktemp("hf")
    shutil.copytree(write_tiny_clip(root / "tiny", seed=0), cache_entry(root / "hub", "openai/clip-vit-large-patch14"))
    partial = cache_entry(root / "hub", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K")
    partial.mkdir(parents=True)
    (partial / "tokenizer_config.json").write_text("{}")
    return root / "hub"


def models(cache: Path, *args: str, offline: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REWARDFLOW_", "HF_"))}
    env.update({"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1" if offline else "0"})
    return subprocess.run([*COMMAND, "models", *args], env=env, capture_output=True, text=True, timeout=300)


def rows(stdout: str) -> dict[tuple[str, str], str]:
    """(who, repo) -> the rest of the line."""
    out = {}
    for line in stdout.splitlines()[1:]:
        parts = line.split("  ")
        cells = [p.strip() for p in parts if p.strip()]
        if len(cells) >= 3 and not cells[0].startswith("note:"):
            out[(cells[0], cells[1])] = "  ".join(cells[2:])
    return out


@pytest.mark.slow
def test_list_reports_the_cached_model_present_and_the_others_missing(cache: Path) -> None:
    result = models(cache, "list", "clipscore", "pickscore", "--trainer", "shapes_geneval", "--trainer", "sd3_geneval")
    assert result.returncode == 1, result.stderr  # something is missing
    assert result.stdout.splitlines()[0] == f"Hugging Face cache: {cache}"
    table = rows(result.stdout)
    assert table[("clipscore", "openai/clip-vit-large-patch14")].startswith("cached")
    assert table[("pickscore", "yuvalkirstain/PickScore_v1")].startswith("missing")
    assert table[("pickscore", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K")].startswith(
        "incomplete (no file for preprocessor_config.json)"
    )
    assert table[("shapes_geneval", "-")] == "nothing from the hub"  # its geneval runs the shapes detector
    assert table[("sd3_geneval", "stabilityai/stable-diffusion-3.5-medium")].startswith("missing")
    assert "gated" in table[("sd3_geneval", "stabilityai/stable-diffusion-3.5-medium")]
    assert table[("sd3_geneval (geneval)", "facebook/mask2former-swin-small-coco-instance")].startswith("missing")
    assert table[("sd3_geneval (geneval)", "openai/clip-vit-large-patch14")].startswith("cached")


@pytest.mark.slow
def test_pull_skips_what_is_cached_and_offline_says_what_to_download_in_one_line(cache: Path) -> None:
    done = models(cache, "pull", "clipscore")
    assert done.returncode == 0 and done.stdout.strip() == "openai/clip-vit-large-patch14: already in the cache"
    refused = models(cache, "pull", "pickscore")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "rewardflow: error: cannot download yuvalkirstain/PickScore_v1, laion/CLIP-ViT-H-14-laion2B-s32B-b79K: "
        f"HF_HUB_OFFLINE=1; run `rewardflow models pull` where the hub is reachable and copy the cache folder {cache} "
        "here (or mount it, as compose and the chart do)"
    ]
