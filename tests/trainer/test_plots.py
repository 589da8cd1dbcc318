"""Reward curve and captioned grids: files are real PNGs, layouts hold every image, text fits its cell."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from rewardflow_trainer.plots import (
    _font,
    _wrap,
    before_after_grid,
    image_grid,
    moving_average,
    reward_curve,
    save_image,
)


def test_moving_average_is_trailing_and_skips_nan():
    out = moving_average([1.0, 3.0, float("nan"), 5.0], window=2)
    assert out.tolist() == [1.0, 2.0, 3.0, 5.0]


def test_reward_curve_writes_a_png_with_band_and_eval_points(tmp_path):
    records = [{"epoch": e, "reward_mean": -2 + e / 50, "reward_std": 0.1} for e in range(60)]
    records[10]["eval/reward_mean"] = -1.5
    records[20]["kl"] = None  # other keys and gaps are fine
    path = reward_curve(records, tmp_path / "out" / "reward_curve.png", subtitle="reward start -2 → end -0.8")
    image = Image.open(path)
    assert image.format == "PNG" and image.size == (900, 504)
    pixels = np.asarray(image.convert("RGB"))
    assert (np.abs(pixels.astype(int) - [255, 127, 14]).sum(-1) < 40).any(), "no orange eval marker drawn"


def test_reward_curve_without_the_key_lists_what_it_saw(tmp_path):
    with pytest.raises(ValueError, match=r"no record has 'reward_mean'; keys seen: \['epoch', 'loss'\]"):
        reward_curve([{"epoch": 0, "loss": 1.0}], tmp_path / "c.png")


def test_image_grid_places_every_image_at_its_cell():
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    images = [np.full((16, 16, 3), c, np.uint8) for c in colors]
    grid = image_grid(images, [f"prompt {i}" for i in range(5)], [0.5, -1.0, None, float("nan"), 2.0], cell=64)
    pixels = np.asarray(grid)
    assert grid.width == 3 * (64 + 8) + 8  # ceil(sqrt(5)) = 3 columns, two rows
    for i, color in enumerate(colors):
        x, y = 8 + (i % 3) * 72 + 32, 8 + (i // 3) * (pixels.shape[0] - 8) // 2 + 32
        assert tuple(pixels[y, x]) == color, f"image {i} not at its cell"


def test_long_captions_wrap_within_the_cell_width():
    font = _font(12)
    lines = _wrap("a lighthouse at sunset " * 10 + "Supercalifragilisticexpialidocious" * 3, font, 100, 3)
    assert len(lines) == 3 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 100 for line in lines)


def test_before_after_grid_stacks_first_and_last_epoch(tmp_path):
    before = np.zeros((2, 32, 32, 3), np.uint8)
    after = np.full((2, 32, 32, 3), 255, np.uint8)
    grid = before_after_grid(["a cat", "a dog"], before, after, [-1.0, -1.1], [-0.2, -0.3], cell=64)
    pixels = np.asarray(grid)
    column = pixels[:, 8 + 32, :].sum(-1)  # down the middle of the first image cell
    black_rows, white_band = np.where(column == 0)[0], grid.height // 2
    assert black_rows.size > 0 and black_rows.max() < white_band  # 'before' (black) is the top row
    assert save_image(grid, tmp_path / "g" / "before_after.png").stat().st_size > 0
    with pytest.raises(ValueError, match="2 prompts, 2 before, 1 after"):
        before_after_grid(["a", "b"], before, after[:1])


def test_grid_rejects_mismatched_captions():
    with pytest.raises(ValueError, match="2 images, 1 captions"):
        image_grid([np.zeros((4, 4, 3), np.uint8)] * 2, ["x"])
