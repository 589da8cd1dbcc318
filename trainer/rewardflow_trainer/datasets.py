"""The prompt sets the presets read, where they go and which `rewardflow data` command writes each.

The presets read `dataset/<set>/...` relative to the working directory, as the reference does
(flow_grpo/dataset/<task>/); `rewardflow data generate|fetch` writes there (or under --data-dir).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path("dataset")
"""Where the presets read their prompt files, relative to the working directory."""


@dataclass(frozen=True)
class PromptSet:
    """Prompt files in one folder of the data directory, and the commands that write them."""

    name: str
    folder: str
    files: tuple[str, ...]
    make: tuple[str, ...]
    """`rewardflow data` actions that write these files, e.g. ('generate ocr', 'fetch ocr')."""
    about: str


SETS: tuple[PromptSet, ...] = (
    PromptSet("pickscore", "pickscore", ("train.txt", "test.txt"), ("fetch pickscore",),
              "Pick-a-Pic prompts, Flow-GRPO's train/test split"),
    PromptSet("ocr", "ocr", ("train.txt", "test.txt"), ("generate ocr", "fetch ocr"),
              "text-rendering prompts: ours, seeded (generate), or Flow-GRPO's (fetch)"),
    PromptSet("geneval", "geneval", ("train_metadata.jsonl", "test_metadata.jsonl"), ("generate geneval",),
              "GenEval-style prompts with their metadata, seeded"),
    PromptSet("geneval-benchmark", "geneval", ("evaluation_metadata.jsonl",), ("fetch geneval",),
              "GenEval's own 553 benchmark prompts (for evaluation)"),
    PromptSet("shapes", "shapes", ("train_metadata.jsonl", "test_metadata.jsonl"), ("generate shapes",),
              "the shapes world's 126 GenEval prompts"),
    PromptSet("drawbench", "drawbench", ("test.txt",), ("fetch drawbench",), "DrawBench's prompts (evaluation only)"),
    PromptSet("hps", "hps", ("test.txt",), ("fetch hps",), "HPSv2's benchmark prompts, four styles (evaluation only)"),
)  # fmt: skip


def set_of(path: str | Path) -> tuple[PromptSet, Path] | None:
    """The catalog's set holding a file `<data dir>/<folder>/<file>`, and that data dir; None if none does."""
    path = Path(path)
    for prompt_set in SETS:
        if path.parent.name == prompt_set.folder and path.name in prompt_set.files:
            return prompt_set, path.parent.parent
    return None


def making_command(path: str | Path) -> str | None:
    """The command that writes the prompt file `path` ('rewardflow data fetch pickscore'), or None."""
    found = set_of(path)
    if found is None:
        return None
    prompt_set, data_dir = found
    where = "" if data_dir == DATA_DIR else f" --data-dir {data_dir}"
    return " or ".join(f"`rewardflow data {action}{where}`" for action in prompt_set.make)
