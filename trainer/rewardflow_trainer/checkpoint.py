"""Checkpoints for exact resume: trainable weights, optimizer, EMA, RNG states, counters, stat tracker,
config; written atomically (temp dir + rename), the last K kept, plus a diffusers-format export."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rewardflow_trainer.config import Config
from rewardflow_trainer.ema import EMA

CHECKPOINTS_DIR = "checkpoints"
DIFFUSERS_DIR = "diffusers"
_NAME = re.compile(r"^epoch-(\d{6,})$")

Generator = torch.Generator | np.random.Generator


class Trainable(Protocol):
    """What is trained (rewardflow_trainer.lora.Policy): its weights and a diffusers-format export."""

    def trainable_state_dict(self) -> dict[str, torch.Tensor]: ...
    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...
    def save_pretrained(self, directory: str | Path) -> Path: ...


class StateDictLike(Protocol):
    """Anything with state_dict/load_state_dict (an optimizer, a scheduler, the stat tracker)."""

    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any) -> Any: ...


@dataclass
class TrainingState:
    """Counters of a run: epochs completed and optimizer steps taken, plus JSON-able extras."""

    epoch: int = 0
    global_step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def capture_rng_state(generators: Mapping[str, Generator] | None = None) -> dict[str, Any]:
    """This process's RNG states: python, numpy global, torch CPU and CUDA, and named generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "torch_generators": {k: g.get_state() for k, g in (generators or {}).items() if isinstance(g, torch.Generator)},
        # numpy bit-generator states hold 128-bit ints: kept as JSON text to load without pickle.
        "numpy_generators": json.dumps(
            {k: g.bit_generator.state for k, g in (generators or {}).items() if isinstance(g, np.random.Generator)}
        ),
    }


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, Generator] | None = None) -> None:
    """Put back what capture_rng_state returned; named generators are restored in place."""
    random.setstate(_as_tuple(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_states = json.loads(state["numpy_generators"])
    for name, generator in (generators or {}).items():
        saved = state["torch_generators"] if isinstance(generator, torch.Generator) else numpy_states
        if name not in saved:
            raise KeyError(f"checkpoint has no RNG state for generator {name!r}; it has {sorted(saved)}")
        if isinstance(generator, torch.Generator):
            generator.set_state(saved[name])
        else:
            generator.bit_generator.state = saved[name]


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


def checkpoint_dir(run_dir: str | Path, epoch: int) -> Path:
    """Where the checkpoint taken after `epoch` epochs lives."""
    return Path(run_dir) / CHECKPOINTS_DIR / f"epoch-{epoch:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint dir as given, or a run dir's latest checkpoint; FileNotFoundError otherwise."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"run.resume = '{path}': expected a checkpoint dir or a run dir with checkpoints")
    return found[-1]


def save_checkpoint(
    run_dir: str | Path,
    state: TrainingState,
    policy: Trainable,
    optimizer: StateDictLike | None = None,
    ema: EMA | None = None,
    rng_states: Sequence[Mapping[str, Any]] | None = None,
    generators: Mapping[str, Generator] | None = None,
    stat_tracker: StateDictLike | None = None,
    config: Config | None = None,
    keep: int = 3,
    export_diffusers: bool = True,
) -> Path:
    """Write the checkpoint for `state.epoch` atomically and drop all but the newest `keep`.

    Call on the main process only. `rng_states` holds one capture_rng_state() per rank (gathered by
    the loop); None captures this process's (with `generators`). The diffusers export holds the EMA
    weights when `ema` is given (that is what eval uses), the raw files the live ones (for resume).
    """
    final = checkpoint_dir(run_dir, state.epoch)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        weights = {k: v.detach().cpu().contiguous() for k, v in policy.trainable_state_dict().items()}
        save_file(weights, tmp / "trainable.safetensors")
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if ema is not None:
            torch.save(ema.state_dict(), tmp / "ema.pt")
        torch.save(list(rng_states) if rng_states is not None else [capture_rng_state(generators)], tmp / "rng.pt")
        tracker = stat_tracker.state_dict() if stat_tracker is not None else None
        (tmp / "state.json").write_text(json.dumps({**asdict(state), "stat_tracker": tracker}, indent=2) + "\n")
        if config is not None:
            config.save(tmp / "config.json")
        if export_diffusers:
            if ema is not None:
                with ema.swapped_in():
                    policy.save_pretrained(tmp / DIFFUSERS_DIR)
            else:
                policy.save_pretrained(tmp / DIFFUSERS_DIR)
        if final.exists():  # re-saving the same epoch (e.g. after a resume): replace it whole
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            final.rename(old)
            shutil.rmtree(old)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for stale in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(stale)
    return final


def load_checkpoint(
    path: str | Path,
    policy: Trainable,
    optimizer: StateDictLike | None = None,
    ema: EMA | None = None,
    generators: Mapping[str, Generator] | None = None,
    stat_tracker: StateDictLike | None = None,
    rank: int = 0,
    restore_rng: bool = True,
) -> TrainingState:
    """Restore everything save_checkpoint wrote into the given objects; returns the counters.

    `path` is a checkpoint dir or a run dir (its latest checkpoint). Every rank calls this with its
    own `rank` to get its own RNG state back.
    """
    path = resolve_checkpoint(path)
    policy.load_trainable_state_dict(load_file(path / "trainable.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(_load(path / "optimizer.pt", "optimizer"))
    if ema is not None:
        ema.load_state_dict(_load(path / "ema.pt", "EMA"))
    saved = json.loads((path / "state.json").read_text())
    if stat_tracker is not None and saved.get("stat_tracker") is not None:
        stat_tracker.load_state_dict(saved["stat_tracker"])
    if restore_rng:
        rng_states = _load(path / "rng.pt", "RNG")
        if rank >= len(rng_states):
            raise ValueError(
                f"checkpoint {path} holds RNG states of {len(rng_states)} process(es), but this is rank {rank}: "
                "resume with the same number of processes (or restore_rng=False for an inexact resume)"
            )
        restore_rng_state(rng_states[rank], generators)
    return TrainingState(epoch=saved["epoch"], global_step=saved["global_step"], extra=saved.get("extra", {}))


def _load(path: Path, what: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint {path.parent} has no {what} state ({path.name}); was it saved without one?"
        )
    return torch.load(path, map_location="cpu", weights_only=True)
