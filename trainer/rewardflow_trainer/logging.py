"""The run's one logger: metrics.jsonl (always), tensorboard (always), wandb (when asked); main process only."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """JSON-able scalar: numpy/torch scalars to float/int, non-finite floats to None (JSON has no NaN)."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunLogger:
    """One call to `log` per epoch writes one JSON line (flushed), tensorboard scalars and wandb.

    On processes other than the main one every method does nothing, so the loop needs no guards.
    """

    def __init__(
        self,
        out_dir: str | Path,
        is_main: bool = True,
        wandb: bool = False,
        wandb_project: str = "rewardflow",
        config: dict[str, Any] | None = None,
        run_name: str | None = None,
        start_epoch: int | None = None,
    ) -> None:
        """`start_epoch` (a resume): drop records of epochs >= it that a killed run wrote after its checkpoint."""
        self.out_dir = Path(out_dir)
        self.is_main = is_main
        self._file = None
        self._writer = None
        self._wandb = None
        if not is_main:
            return
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise RuntimeError(
                    "run.wandb = True needs the wandb package: pip install 'rewardflow-trainer[wandb]' "
                    "(or set run.wandb=false)"
                ) from None
            self._wandb = wandb_module.init(project=wandb_project, name=run_name, config=config, dir=str(self.out_dir))
        from torch.utils.tensorboard import SummaryWriter

        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / METRICS_FILE
        if start_epoch is not None and path.exists():
            kept = [r for r in read_metrics(path) if r.get("epoch", -1) < start_epoch]
            path.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
        self._file = path.open("a", encoding="utf-8")
        self._writer = SummaryWriter(log_dir=str(self.out_dir / "tensorboard"), purge_step=start_epoch)

    def log(self, epoch: int, metrics: dict[str, Any]) -> None:
        """Record one epoch's figures (e.g. reward_mean, reward_std, clipfrac, eval/reward_mean)."""
        if not self.is_main:
            return
        record = {"epoch": int(epoch), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(key, value, epoch)
        self._writer.flush()
        if self._wandb is not None:
            self._wandb.log(record, step=epoch)

    def log_image(self, epoch: int, tag: str, image: np.ndarray) -> None:
        """Record one picture (a sample grid), image: (H, W, 3) uint8."""
        if not self.is_main:
            return
        self._writer.add_image(tag, image, epoch, dataformats="HWC")
        self._writer.flush()
        if self._wandb is not None:
            import wandb as wandb_module

            self._wandb.log({tag: wandb_module.Image(image)}, step=epoch)

    def close(self) -> None:
        """Flush and close every sink (safe to call twice)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl (a run dir or the file); a torn last line is skipped."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a run killed mid-write leaves a partial last line
    return records
