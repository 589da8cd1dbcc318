"""The shapes world as training data: the prompt split, the tokenizers' words, and seeded batches of renders.

rewardflow_geneval (the `shapes` extra of rewardflow-trainer) is imported here only, when data is made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

N_TRAIN, N_TEST = 105, 21
"""All 126 prompts of the shapes world, split as docs/geneval.md describes (`--n 105 --n-test 21`)."""
SPLIT_FILES = {"train": "train_metadata.jsonl", "test": "test_metadata.jsonl"}


def _geneval() -> Any:
    try:
        from rewardflow_geneval import prompts, shapes
        from rewardflow_geneval.metadata import SHAPES
    except ImportError as exc:
        raise ImportError(
            f"pretraining on the shapes world needs rewardflow-geneval ({exc}); "
            "install it with `pip install -e services/geneval` or `pip install -e 'trainer[shapes]'`"
        ) from None
    return prompts, shapes, SHAPES


def batch_seed(seed: int, stream: int, step: int) -> int:
    """One 63-bit seed per (run seed, stream, step): the data of a step never depends on what ran before."""
    return int(np.random.SeedSequence([seed, stream, step]).generate_state(2, np.uint64)[0] >> np.uint64(1))


@dataclass(frozen=True)
class ShapesData:
    """The train and held-out split of the shapes world; batches are drawn from `train` only."""

    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    split_seed: int = 0

    @classmethod
    def load(cls, split_seed: int = 0) -> ShapesData:
        """generate(105, 21, seed=split_seed, world=SHAPES): every prompt, none in both splits."""
        prompts, _, world = _geneval()
        train, test = prompts.generate(N_TRAIN, N_TEST, seed=split_seed, world=world)
        return cls(train=train, test=test, split_seed=split_seed)

    @property
    def tags(self) -> list[str]:
        """The tags of the train split, in first-seen order."""
        return list(dict.fromkeys(entry["tag"] for entry in self.train))

    def words(self) -> list[str]:
        """Every word of every prompt of both splits, sorted: what the tokenizers must know whole."""
        return sorted({word for entry in self.train + self.test for word in entry["prompt"].split()})

    def draw(self, seed: int, stream: int, step: int, size: int) -> tuple[list[dict[str, Any]], np.ndarray]:
        """`size` train entries (a tag uniformly, then one of its prompts) and a render of each: uint8 (B, 64, 64, 3).

        Tags are balanced because the split is not (60 of the 105 prompts are color_attr, 2 single_object).
        """
        _, shapes, _ = _geneval()
        rng = np.random.default_rng(batch_seed(seed, stream, step))
        by_tag = {tag: [e for e in self.train if e["tag"] == tag] for tag in self.tags}
        tags = self.tags
        entries = []
        for tag_index in rng.integers(len(tags), size=size):
            pool = by_tag[tags[tag_index]]
            entries.append(pool[rng.integers(len(pool))])
        images = np.stack([shapes.render(entry, rng) for entry in entries])
        return entries, images

    def save(self, folder: Path) -> None:
        """Write the split as GenEval metadata JSONL (train_metadata.jsonl, test_metadata.jsonl) into `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, entries in (("train", self.train), ("test", self.test)):
            (folder / SPLIT_FILES[name]).write_text("".join(json.dumps(e) + "\n" for e in entries))


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1], the VAE's input range."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def prompts_of(entries: Sequence[dict[str, Any]]) -> list[str]:
    return [entry["prompt"] for entry in entries]
