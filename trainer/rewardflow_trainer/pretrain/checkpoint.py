"""The pretraining checkpoint: one folder (`checkpoint/`) replaced atomically; no pickle beyond weights_only.

checkpoint/state.json (Progress), <module>.safetensors per trained module, optimizer.pt (the current
stage's AdamW, read with weights_only=True), ema.safetensors + ema.json (the transformer's EMA).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file

from rewardflow_trainer.ema import EMA

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
P = TypeVar("P")


def exists(out: Path) -> bool:
    return (out / CHECKPOINT_DIR / STATE_FILE).is_file()


def save(
    out: Path,
    progress: Any,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    ema: EMA | None = None,
) -> Path:
    """Write the checkpoint into a temporary folder, then swap it in: a crash never leaves half of one."""
    final = out / CHECKPOINT_DIR
    tmp, old = out / f".{CHECKPOINT_DIR}-tmp-{os.getpid()}", out / f".{CHECKPOINT_DIR}-old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, tmp / f"{name}.safetensors")
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if ema is not None:
        state = ema.state_dict()
        save_file({str(i): t.contiguous() for i, t in enumerate(state.pop("shadow"))}, tmp / "ema.safetensors")
        (tmp / "ema.json").write_text(json.dumps(state))
    (tmp / STATE_FILE).write_text(json.dumps(asdict(progress)) + "\n")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def restore_progress(out: Path, identity: dict[str, Any], cls: type[P]) -> P:
    """The saved Progress; ValueError if the run's seed, split or hyper-parameters differ from `identity`."""
    path = out / CHECKPOINT_DIR / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"--resume: {path} does not exist; start without --resume")
    saved = json.loads(path.read_text())
    if saved["identity"] != identity:
        old = saved["identity"]
        differ = sorted(k for k in set(identity) | set(old) if identity.get(k) != old.get(k))
        was = ", ".join(f"{k}={old.get(k)}" for k in differ)
        asked = ", ".join(f"{k}={identity.get(k)}" for k in differ)
        raise ValueError(f"--resume: the checkpoint in {out} was made with {was}; this run asks for {asked}")
    return cls(**saved)


def load_weights(
    out: Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    ema: EMA | None = None,
) -> bool:
    """Load what save() wrote into the given objects; False (nothing loaded) when there is no checkpoint."""
    folder = out / CHECKPOINT_DIR
    if not (folder / STATE_FILE).is_file():
        return False
    for name, module in modules.items():
        module.load_state_dict(load_file(folder / f"{name}.safetensors"))
    if optimizer is not None:
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True))
    if ema is not None:
        shadow = load_file(folder / "ema.safetensors")
        state = json.loads((folder / "ema.json").read_text())
        ema.load_state_dict({**state, "shadow": [shadow[str(i)] for i in range(len(shadow))]})
    return True
