"""The loss curve of a pretraining run (matplotlib Agg): one panel per stage, raw and smoothed, log scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rewardflow_trainer.plots import moving_average


def loss_curve(losses: dict[str, list[float]], path: Path) -> Path:
    """Write a PNG with the per-step loss of each stage that has any."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stages = [name for name, values in losses.items() if values]
    figure = Figure(figsize=(5.0 * len(stages), 3.6), dpi=110)
    FigureCanvasAgg(figure)
    for i, name in enumerate(stages):
        values = np.asarray(losses[name], dtype=np.float64)
        steps = np.arange(1, values.size + 1)
        axes = figure.add_subplot(1, len(stages), i + 1)
        axes.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=0.8, label="per step")
        window = max(1, min(100, values.size // 10))
        smooth = moving_average(values, window)
        axes.plot(steps, smooth, color="tab:blue", linewidth=2, label=f"moving avg ({window})")
        axes.set_yscale("log")
        axes.set_title(f"{name}: {values.size} steps, last {smooth[-1]:.4g}", fontsize=10)
        axes.set_xlabel("step")
        axes.set_ylabel("MSE")
        axes.grid(True, alpha=0.3, which="both")
        axes.legend(fontsize=8, frameon=False)
    figure.tight_layout()
    figure.savefig(path)
    return path
