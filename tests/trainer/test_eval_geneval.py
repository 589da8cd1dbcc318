"""`rewardflow eval geneval` end to end: tiny SD3 images, scored by a real geneval service with tiny models.

The numbers mean nothing (random models); the test checks the files, their structure, and that the
report's figures are GenEval's summary of the per-image verdicts it wrote.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from rewardflow_trainer.eval_geneval import ImageResult, load_model, main, summarize, summary_markdown

DOG = {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"}
CAT = {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"}
TWO_DOGS = {
    "tag": "counting",
    "include": [{"class": "dog", "count": 2}],
    "exclude": [{"class": "dog", "count": 3}],
    "prompt": "a photo of two dogs",
}
RED_DOG = {"tag": "colors", "include": [{"class": "dog", "count": 1, "color": "red"}], "prompt": "a photo of a red dog"}


def result(prompt_index: int, entry: dict, correct: bool, score: float = 0.0) -> ImageResult:
    return ImageResult(prompt_index, 0, entry, correct, score, "" if correct else "why", None)


def test_summary_is_genevals_mean_of_tag_accuracies_and_any_correct_per_prompt() -> None:
    results = [
        result(0, DOG, True, 1.0),
        result(0, DOG, False),
        result(1, CAT, False),
        result(1, CAT, False),
        result(2, TWO_DOGS, True, 1.0),
        result(2, TWO_DOGS, True, 1.0),
    ]
    summary = summarize(results)
    assert summary["tags"]["single_object"] == {"accuracy": 0.25, "correct": 1, "images": 4}
    assert summary["tags"]["counting"]["accuracy"] == 1.0
    assert summary["overall"] == pytest.approx((0.25 + 1.0) / 2)  # per task, not per image (3/6)
    assert summary["correct_images"] == 0.5
    assert summary["correct_prompts"] == pytest.approx(2 / 3)
    text = summary_markdown(summary, "tiny")
    assert "| single_object | 25.00% | 1 / 4 |" in text
    assert "Overall score (avg. over tasks): 0.62500" in text


@pytest.fixture
def tiny_geneval(service_process, tmp_path_factory):
    from rewardflow_geneval.tiny import write_tiny_mask2former
    from rewardflow_vision.tiny import write_tiny_clip

    root = tmp_path_factory.mktemp("geneval-models")
    detector = write_tiny_mask2former(root / "detector", shortest_edge=64, favour_class="dog")
    clip = write_tiny_clip(root / "clip")
    env = {"REWARDFLOW_MODEL": str(detector), "REWARDFLOW_CLIP_MODEL": str(clip), "HF_HUB_OFFLINE": "1"}
    return service_process("geneval", env=env, timeout_s=180)


@pytest.mark.slow
@pytest.mark.e2e
def test_eval_geneval_writes_genevals_report_from_the_per_image_verdicts(tiny_geneval, tmp_path: Path) -> None:
    metadata = tmp_path / "evaluation_metadata.jsonl"
    metadata.write_text("".join(json.dumps(e) + "\n" for e in (DOG, CAT, TWO_DOGS, RED_DOG)))
    out = tmp_path / "report"
    argv = ["--model", "tiny", "--metadata", str(metadata), "--images-per-prompt", "2", "--steps", "2"]
    argv += ["--batch-size", "3", "--url", tiny_geneval.url, "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0

    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 8
    assert set(records[0]) >= {"filename", "tag", "prompt", "correct", "reason", "metadata", "details", "score"}
    for rec in records:
        assert (out / rec["filename"]).is_file()
        assert json.loads(rec["metadata"])["prompt"] == rec["prompt"]
        assert rec["correct"] == (rec["reason"] == "")
    assert json.loads((out / "images" / "00001" / "metadata.jsonl").read_text()) == CAT
    # the tiny detector sees dogs (~0.5 confidence) everywhere and nothing else
    cat = [r for r in records if r["prompt"] == CAT["prompt"]]
    assert not any(r["correct"] for r in cat) and all("cat" in r["reason"] for r in cat)
    assert all(r["correct"] for r in records if r["prompt"] == DOG["prompt"])

    summary = json.loads((out / "summary.json").read_text())
    for tag, figures in summary["tags"].items():
        verdicts = [r["correct"] for r in records if r["tag"] == tag]
        assert figures["images"] == len(verdicts)
        assert figures["accuracy"] == sum(verdicts) / len(verdicts)
    assert list(summary["tags"]) == ["single_object", "counting", "colors"]
    assert summary["overall"] == pytest.approx(sum(v["accuracy"] for v in summary["tags"].values()) / 3)
    assert summary["images"] == 8 and summary["prompts"] == 4
    assert summary["run"]["steps"] == 2 and summary["run"]["service_urls"] == [tiny_geneval.url]
    assert "Overall score (avg. over tasks)" in (out / "summary.md").read_text()
    from PIL import Image

    with Image.open(out / "failures.png") as grid:
        assert grid.width > 64 and grid.height > 64


def test_lora_folder_is_loaded_onto_the_transformer(tmp_path: Path) -> None:
    from rewardflow_trainer.config import LoraConfig
    from rewardflow_trainer.lora import Policy
    from rewardflow_trainer.models import SD3Family

    family = SD3Family.tiny(seed=0)
    policy = Policy(family.transformer, LoraConfig(rank=4, alpha=8.0), seed=1, export_lora=family.save_lora_weights)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01)
    saved = {k: v.clone() for k, v in policy.trainable_state_dict().items()}
    policy.save_pretrained(tmp_path / "ckpt" / "diffusers")
    args = argparse.Namespace(
        model="tiny", family="sd3", lora=tmp_path / "ckpt", resolution=None, device="cpu", dtype=None
    )
    loaded = load_model(args).transformer
    state = {k: v for k, v in loaded.state_dict().items() if "lora" in k}
    assert len(state) == len(saved) > 0
    for key, value in saved.items():
        match = [v for k, v in state.items() if k.replace(".default", "") == key.replace(".default", "")]
        assert match and torch.equal(match[0], value), key
