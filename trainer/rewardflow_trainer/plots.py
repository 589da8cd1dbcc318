"""Pictures of a run: the reward curve (matplotlib Agg), captioned sample grids and a before/after grid (PIL)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_BACKGROUND = (255, 255, 255)
_TEXT = (20, 20, 20)
_MUTED = (90, 90, 90)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over the last `window` values (shorter at the start), NaNs ignored."""
    data = np.asarray(values, dtype=np.float64)
    out = np.full(data.shape, np.nan)
    for i in range(data.size):
        chunk = data[max(0, i - window + 1) : i + 1]
        if np.isfinite(chunk).any():
            out[i] = np.nanmean(chunk)
    return out


def reward_curve(
    records: Sequence[dict[str, Any]],
    path: str | Path,
    key: str = "reward_mean",
    std_key: str = "reward_std",
    eval_key: str = "eval/reward_mean",
    window: int | None = None,
    title: str = "Reward per epoch",
    subtitle: str | None = None,
) -> Path:
    """Write reward_curve.png: mean per epoch, a ± std band, a moving average, and eval points if logged.

    `subtitle` (e.g. the run's one-line summary) replaces the default "start x → end y" of the moving average.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = [r for r in records if r.get(key) is not None]
    if not rows:
        raise ValueError(f"reward_curve: no record has {key!r}; keys seen: {sorted({k for r in records for k in r})}")
    epochs = np.array([r["epoch"] for r in rows], dtype=np.float64)
    mean = np.array([r[key] for r in rows], dtype=np.float64)
    std = np.array([np.nan if r.get(std_key) is None else r[std_key] for r in rows], dtype=np.float64)
    window = window or max(1, min(20, len(rows) // 10))

    figure = Figure(figsize=(7.5, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if np.isfinite(std).any():
        axes.fill_between(epochs, mean - std, mean + std, color="tab:blue", alpha=0.15, linewidth=0, label="± std")
    axes.plot(epochs, mean, color="tab:blue", alpha=0.45, linewidth=1, label=key)
    if window > 1:
        axes.plot(epochs, moving_average(mean, window), color="tab:blue", linewidth=2.2, label=f"moving avg ({window})")
    evals = [r for r in records if r.get(eval_key) is not None]
    if evals:
        axes.plot(
            [r["epoch"] for r in evals],
            [r[eval_key] for r in evals],
            "o-",
            color="tab:orange",
            markersize=4,
            linewidth=1.4,
            label=eval_key,
        )
    if subtitle is None:
        start, end = mean[:window].mean(), mean[-window:].mean()
        subtitle = f"start {start:.4g} → end {end:.4g}"
    axes.set_title(f"{title}   ({subtitle})", fontsize=11)
    axes.set_xlabel("epoch")
    axes.set_ylabel("reward")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize=8, frameon=False)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(text: str, font: Any, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap to `width` pixels, at most `max_lines` (the last one ellipsized)."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if font.getlength(candidate) <= width or not current:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1] + " …"
    for i in range(len(lines)):  # a single word wider than the cell
        while font.getlength(lines[i]) > width and len(lines[i]) > 2:
            lines[i] = lines[i][:-2] + "…"
    return lines


def _to_pil(image: np.ndarray | Image.Image, cell: int) -> Image.Image:
    """A square cell: small images are enlarged with nearest-neighbour so pixels stay visible."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    picture = picture.convert("RGB")
    resample = Image.Resampling.NEAREST if picture.width < cell else Image.Resampling.LANCZOS
    return picture.resize((cell, round(cell * picture.height / picture.width)), resample)


def image_grid(
    images: Sequence[np.ndarray | Image.Image] | np.ndarray,
    captions: Sequence[str],
    rewards: Sequence[float | None] | None = None,
    columns: int | None = None,
    cell: int = 192,
    title: str | None = None,
    caption_lines: int = 3,
) -> Image.Image:
    """Images (each (H, W, 3) uint8) in a grid, each with its prompt and reward written under it."""
    if len(images) != len(captions) or (rewards is not None and len(rewards) != len(images)):
        raise ValueError(
            f"image_grid: {len(images)} images, {len(captions)} captions, "
            f"{'no' if rewards is None else len(rewards)} rewards: expected one of each per image"
        )
    if len(images) == 0:
        raise ValueError("image_grid: expected at least one image")
    columns = columns or min(len(images), max(1, math.ceil(math.sqrt(len(images)))))
    rows = math.ceil(len(images) / columns)
    size = max(11, cell // 14)
    font, small = _font(size), _font(max(10, size - 1))
    line = size + 3
    pad = 8
    text_height = line * caption_lines + (line if rewards is not None else 0) + 4
    cells = [_to_pil(image, cell) for image in images]
    image_height = max(c.height for c in cells)
    header = line + 10 if title else 0
    grid = Image.new(
        "RGB", (columns * (cell + pad) + pad, header + rows * (image_height + text_height + pad) + pad), _BACKGROUND
    )
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((pad, pad), title, fill=_TEXT, font=_font(size + 2))
    for i, picture in enumerate(cells):
        x = pad + (i % columns) * (cell + pad)
        y = header + pad + (i // columns) * (image_height + text_height + pad)
        grid.paste(picture, (x, y))
        ty = y + image_height + 3
        if rewards is not None:  # first, so rewards line up across a row whatever the caption length
            reward = rewards[i]
            label = "reward n/a" if reward is None or not math.isfinite(reward) else f"reward {reward:.4g}"
            draw.text((x, ty), label, fill=_MUTED, font=small)
            ty += line
        for text in _wrap(captions[i], font, cell, caption_lines):
            draw.text((x, ty), text, fill=_TEXT, font=font)
            ty += line
    return grid


def before_after_grid(
    prompts: Sequence[str],
    before: Sequence[np.ndarray | Image.Image] | np.ndarray,
    after: Sequence[np.ndarray | Image.Image] | np.ndarray,
    rewards_before: Sequence[float | None] | None = None,
    rewards_after: Sequence[float | None] | None = None,
    labels: tuple[str, str] = ("first epoch", "last epoch"),
    cell: int = 192,
) -> Image.Image:
    """Two rows for the same prompts: samples at the start (top) and at the end (bottom)."""
    if not len(prompts) == len(before) == len(after):
        raise ValueError(
            f"before_after_grid: {len(prompts)} prompts, {len(before)} before, {len(after)} after: expected equal"
        )
    top = image_grid(before, list(prompts), rewards_before, columns=len(prompts), cell=cell, title=labels[0])
    bottom = image_grid(after, list(prompts), rewards_after, columns=len(prompts), cell=cell, title=labels[1])
    grid = Image.new("RGB", (max(top.width, bottom.width), top.height + bottom.height + 6), (200, 200, 200))
    grid.paste(top, (0, 0))
    grid.paste(bottom, (0, top.height + 6))
    return grid


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write a PNG (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path
