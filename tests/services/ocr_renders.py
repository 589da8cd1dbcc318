"""Images with known text for the OCR tests: rendered with PIL in the DejaVu Sans font matplotlib ships.

matplotlib is in the shared venv (and in the trainer's dependencies), so no system font package is
needed; `font_path()` says where it is and fails with a clear message if it is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# 60 ordinary words; phrases of one or two of them are the "generated set" of the accuracy test.
WORDS = (
    "apple river garden window coffee market silver rocket planet forest "
    "summer winter yellow purple orange castle bridge dragon pencil camera "
    "guitar island jungle kitten lemon mirror needle ocean pepper quartz "
    "rabbit saddle tunnel violet wizard bakery candle donkey engine falcon "
    "harbor jacket ladder meadow number oyster parrot pocket puzzle shadow "
    "spring thunder velvet walnut zipper anchor button cookie breeze sunset"
).split()


def font_path() -> Path:
    """DejaVuSans.ttf from matplotlib's data directory."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not path.is_file():
        raise FileNotFoundError(f"the OCR tests render text with {path}, which matplotlib should ship")
    return path


def render(
    text: str,
    size: int = 512,
    font_size: int = 48,
    center: tuple[float, float] = (0.5, 0.5),
    ink: tuple[int, int, int] = (0, 0, 0),
    paper: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """`text` drawn on a size x size canvas, its box centred at `center` (fractions of the canvas): (H, W, 3) uint8."""
    image = Image.new("RGB", (size, size), paper)
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(str(font_path()), font_size)
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x = center[0] * size - (right - left) / 2 - left
    y = center[1] * size - (bottom - top) / 2 - top
    draw.text((x, y), text, fill=ink, font=font)
    return np.asarray(image)


def generated_phrases(n: int, seed: int = 0) -> list[str]:
    """`n` phrases of one or two WORDS, in random case styles (lower, Title, UPPER), from a fixed seed."""
    rng = np.random.default_rng(seed)
    phrases = []
    for _ in range(n):
        words = [str(w) for w in rng.choice(WORDS, size=int(rng.integers(1, 3)), replace=False)]
        phrase = " ".join(words)
        style = int(rng.integers(0, 3))
        phrases.append(phrase if style == 0 else phrase.title() if style == 1 else phrase.upper())
    return phrases


def generated_renders(phrases: list[str], seed: int = 0) -> list[np.ndarray]:
    """Each phrase at a random size (36-64 px) and position, dark ink on light paper, on 512x512."""
    rng = np.random.default_rng(seed + 1)
    images = []
    for phrase in phrases:
        font_size = int(rng.integers(36, 65))
        center = (float(rng.uniform(0.4, 0.6)), float(rng.uniform(0.2, 0.8)))
        ink = tuple(int(v) for v in rng.integers(0, 80, 3))
        paper = tuple(int(v) for v in rng.integers(200, 256, 3))
        images.append(render(phrase, 512, font_size, center, ink, paper))  # type: ignore[arg-type]
    return images


def levenshtein(a: str, b: str) -> int:
    """Edit distance by the textbook dynamic programme (independent of the service's rapidfuzz)."""
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        current = [i]
        for j, cb in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def expected_accuracy(recognized: str, target: str) -> float:
    """The paper's OCR score from the two raw strings: spaces out, lower case, capped edit distance."""
    recognized = "".join(recognized.split()).lower()
    target = "".join(target.split()).lower()
    if target in recognized:
        return 1.0
    return 1.0 - min(levenshtein(recognized, target), len(target)) / len(target)
