"""Prompt sets (built-in, .txt, GenEval-style .jsonl with metadata) and the grouped distributed
prompt sampler of docs/algorithm.md ("Prompt grouping and same_latent")."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rewardflow_trainer.datasets import making_command

BUILTIN_PROMPT_SETS: dict[str, tuple[str, ...]] = {
    # Short, visually distinct prompts for the embedded tiny-model demo.
    "tiny": (
        "a red apple on a table",
        "a blue car in the rain",
        "a cat sleeping on a sofa",
        "a lighthouse at sunset",
        "a bowl of green soup",
        "a snowy mountain village",
        "a yellow umbrella on a beach",
        "a robot reading a book",
    ),
    "tiny_eval": (
        "a purple flower in a vase",
        "an old bicycle by a wall",
        "a dog running in a park",
        "a wooden boat on a lake",
    ),
}
PROMPT_FILE_SUFFIXES = (".txt", ".jsonl")


@dataclass(frozen=True)
class Prompt:
    """One prompt and the metadata that rides with its images to the reward services."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class PromptBatch:
    """One rank's sampling batch: prompts, their metadata, and their index in the prompt set."""

    prompts: list[str]
    metadata: list[dict[str, Any]]
    prompt_ids: list[int]

    def __len__(self) -> int:
        return len(self.prompts)


def prompt_source_problems(key: str, source: str, check_paths: bool = True) -> list[str]:
    """Why a prompt source is invalid ('key = value: expected ...'), or [] if it is fine."""
    if source in BUILTIN_PROMPT_SETS:
        return []
    if not source.endswith(PROMPT_FILE_SUFFIXES):
        return [
            f"{key} = {source!r}: expected a built-in prompt set ({', '.join(BUILTIN_PROMPT_SETS)}) "
            f"or a path ending in {' or '.join(PROMPT_FILE_SUFFIXES)}"
        ]
    if check_paths and not Path(source).is_file():
        command = making_command(source)
        fix = f"; {command} writes it" if command else ""
        return [f"{key} = {source!r}: expected an existing file (not found from {Path.cwd()}){fix}"]
    return []


def load_prompts(source: str) -> list[Prompt]:
    """Read a prompt set: a built-in name, a .txt file (one prompt a line) or a .jsonl file."""
    problems = prompt_source_problems("prompts", source)
    if problems:
        raise ValueError(problems[0])
    if source in BUILTIN_PROMPT_SETS:
        return [Prompt(text) for text in BUILTIN_PROMPT_SETS[source]]
    path = Path(source)
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".txt":
        prompts = [Prompt(line.strip()) for line in lines if line.strip()]
    else:
        prompts = [_jsonl_prompt(line, path, number) for number, line in enumerate(lines, 1) if line.strip()]
    if not prompts:
        raise ValueError(f"prompt file {source!r}: expected at least one prompt, found none")
    return prompts


def _jsonl_prompt(line: str, path: Path, number: int) -> Prompt:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}:{number}: expected one JSON object per line ({error})") from None
    if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
        raise ValueError(f"{path}:{number}: expected an object with a string 'prompt' field, got {line[:80]!r}")
    return Prompt(record["prompt"], {k: v for k, v in record.items() if k != "prompt"})


class GroupedPromptSampler:
    """Per epoch, m unique prompts each repeated k times, spread over n ranks in batches of b.

    Every rank draws the same permutation from `seed + epoch`, so the ranks agree without talking:
    the m*k list is shuffled and cut into consecutive chunks of n*b; rank r takes items [r*b, (r+1)*b)
    of each chunk. A prompt's k copies may land on different ranks and batches (groups span them).
    """

    def __init__(
        self,
        prompts: Sequence[Prompt],
        num_groups: int,
        group_size: int,
        batch_size: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        if not 1 <= num_groups <= len(prompts):
            raise ValueError(
                f"sample.num_groups = {num_groups}: expected 1..{len(prompts)} (the prompt set has "
                f"{len(prompts)} prompts and each epoch draws num_groups distinct ones)"
            )
        if group_size < 1 or batch_size < 1 or num_replicas < 1:
            raise ValueError(
                f"group_size, batch_size, num_replicas = {group_size}, {batch_size}, {num_replicas}: expected >= 1"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank = {rank}: expected 0 <= rank < num_replicas ({num_replicas})")
        if (num_groups * group_size) % (num_replicas * batch_size):
            raise ValueError(
                f"sample: num_groups*group_size = {num_groups * group_size} must be a multiple of "
                f"world_size*batch_size = {num_replicas}*{batch_size}"
            )
        self.prompts = list(prompts)
        self.num_groups, self.group_size, self.batch_size = num_groups, group_size, batch_size
        self.num_replicas, self.rank, self.seed = num_replicas, rank, seed

    @property
    def batches_per_epoch(self) -> int:
        """Batches each rank samples per epoch."""
        return self.num_groups * self.group_size // (self.num_replicas * self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Prompt indices of the whole epoch over all ranks, (m*k,), identical on every rank."""
        rng = np.random.Generator(np.random.PCG64(self.seed + epoch))
        chosen = rng.permutation(len(self.prompts))[: self.num_groups]
        repeated = np.repeat(chosen, self.group_size)
        return repeated[rng.permutation(repeated.size)]

    def batches(self, epoch: int) -> list[PromptBatch]:
        """This rank's batches for one epoch."""
        order = self.epoch_order(epoch)
        chunk = self.num_replicas * self.batch_size
        start = self.rank * self.batch_size
        out = []
        for offset in range(0, order.size, chunk):
            ids = [int(i) for i in order[offset + start : offset + start + self.batch_size]]
            out.append(
                PromptBatch(
                    prompts=[self.prompts[i].text for i in ids],
                    metadata=[dict(self.prompts[i].metadata) for i in ids],
                    prompt_ids=ids,
                )
            )
        return out


def eval_batches(
    prompts: Sequence[Prompt], batch_size: int, num_replicas: int = 1, rank: int = 0, limit: int | None = None
) -> list[PromptBatch]:
    """This rank's share of the eval prompts (rank r takes every n-th, from r), in batches of at most b."""
    ids = list(range(len(prompts) if limit is None else min(limit, len(prompts))))[rank::num_replicas]
    return [
        PromptBatch(
            prompts=[prompts[i].text for i in ids[j : j + batch_size]],
            metadata=[dict(prompts[i].metadata) for i in ids[j : j + batch_size]],
            prompt_ids=ids[j : j + batch_size],
        )
        for j in range(0, len(ids), batch_size)
    ]
