"""Exponential moving average of the trainable weights, for eval and checkpoints (never rollouts)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


class EMA:
    """Shadow copies `e` of parameters `p`, updated as `e += (1 - d_t) (p - e)` every `update_every` steps.

    `d_t = min((1 + t) / (10 + t), decay)` at optimizer step t (the reference's warm-up); an update
    happens when `(t + 1) % update_every == 0`. Shadows are float32 on `device` (default: each
    parameter's own device).
    """

    def __init__(
        self,
        parameters: Iterable[torch.nn.Parameter],
        decay: float = 0.9,
        update_every: int = 8,
        device: torch.device | str | None = None,
    ) -> None:
        if not 0 <= decay < 1:
            raise ValueError(f"train.ema.decay = {decay}: expected in [0, 1)")
        if update_every < 1:
            raise ValueError(f"train.ema.update_every = {update_every}: expected >= 1")
        self.parameters = list(parameters)
        self.decay, self.update_every = decay, update_every
        self.device = None if device is None else torch.device(device)
        self.shadow = [p.detach().to(self.device or p.device, torch.float32, copy=True) for p in self.parameters]
        self.num_updates = 0

    def current_decay(self, step: int) -> float:
        """The warmed-up decay at optimizer step `step`."""
        return min((1 + step) / (10 + step), self.decay)

    @torch.no_grad()
    def step(self, step: int) -> bool:
        """Call after optimizer step `step` (0-based); returns True if the shadows were updated."""
        if (step + 1) % self.update_every:
            return False
        weight = 1.0 - self.current_decay(step)
        for shadow, param in zip(self.shadow, self.parameters, strict=True):
            shadow.add_(param.detach().to(shadow.device, torch.float32) - shadow, alpha=weight)
        self.num_updates += 1
        return True

    @torch.no_grad()
    def copy_to(self, parameters: Iterable[torch.nn.Parameter] | None = None) -> None:
        """Overwrite parameters (default: the tracked ones) with the shadows."""
        targets = self.parameters if parameters is None else list(parameters)
        for shadow, param in zip(self.shadow, targets, strict=True):
            param.copy_(shadow.to(param.device, param.dtype))

    @contextmanager
    def swapped_in(self) -> Iterator[None]:
        """Run the block with the EMA weights in the model; the live weights come back afterwards."""
        backup = [p.detach().clone() for p in self.parameters]
        self.copy_to()
        try:
            yield
        finally:
            with torch.no_grad():
                for saved, param in zip(backup, self.parameters, strict=True):
                    param.copy_(saved)

    def state_dict(self) -> dict[str, Any]:
        """Shadows and settings (tensors on CPU)."""
        return {
            "decay": self.decay,
            "update_every": self.update_every,
            "num_updates": self.num_updates,
            "shadow": [s.detach().cpu() for s in self.shadow],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict taken from an EMA over parameters of the same shapes."""
        shadow = state["shadow"]
        if len(shadow) != len(self.shadow):
            raise ValueError(f"EMA state has {len(shadow)} tensors, expected {len(self.shadow)} (other trainable set?)")
        for i, (saved, mine) in enumerate(zip(shadow, self.shadow, strict=True)):
            if saved.shape != mine.shape:
                raise ValueError(f"EMA state tensor {i} has shape {tuple(saved.shape)}, expected {tuple(mine.shape)}")
        self.shadow = [s.to(m.device, torch.float32, copy=True) for s, m in zip(shadow, self.shadow, strict=True)]
        self.decay, self.update_every = float(state["decay"]), int(state["update_every"])
        self.num_updates = int(state["num_updates"])
