"""Seeded text-rendering prompts for the OCR reward, in the style of Flow-GRPO's OCR set: a short text in double
quotes on an object in a simple scene ('A realistic photo of a wooden signpost clearly marked "Trail Closed",
in a misty pine forest.'), with train and test splits that share no text.

`python -m rewardflow_ocr.prompts --out DIR --n 20000 --n-test 1000 --seed 0` writes DIR/train.txt and
DIR/test.txt (one prompt a line: what the trainer's sd3_ocr preset reads from dataset/ocr/). The quoted text
is what the OCR reward reads back (rewardflow_ocr.target.quoted_text); test texts never occur in training
prompts, so the held-out score measures rendering new text, not recalling trained strings.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# Our own short vocabulary (English signage, labels and greetings), combined below into texts of 1-4 words.
ADJECTIVES = (
    "Fresh", "Golden", "Silent", "Happy", "Lucky", "Wild", "Sunny", "Cozy", "Secret", "Grand", "Little", "Royal",
    "Urban", "Quiet", "Electric", "Ancient", "Midnight", "Crystal", "Velvet", "Rusty", "Brave", "Gentle", "Cosmic",
    "Frozen", "Hidden", "Lazy", "Magic", "Neon", "Open", "Red", "Blue", "Green", "Silver", "Wooden", "Final",
)  # fmt: skip
NOUNS = (
    "Bakery", "Garden", "Harbor", "Library", "Market", "Coffee", "Dragon", "River", "Station", "Museum", "Theater",
    "Forest", "Island", "Kitchen", "Studio", "Bridge", "Castle", "Valley", "Planet", "Robot", "Tiger", "Ocean",
    "Mountain", "Diner", "Arcade", "Circus", "Harvest", "Lantern", "Meadow", "Orchard", "Pizza", "Records",
    "Sunrise", "Thunder", "Voyage", "Winter", "Bicycle", "Comet", "Falcon", "Journey",
)  # fmt: skip
PLACES = (
    "Paris", "Tokyo", "Cairo", "Oslo", "Lima", "Rome", "Berlin", "Nairobi", "Dublin", "Kyoto", "Havana", "Quebec",
    "Sydney", "Lisbon", "Denver", "Austin", "Venice", "Seoul", "Boston", "Prague",
)  # fmt: skip
UNITS = ("Miles", "Km", "Feet", "Minutes", "Days", "Years", "Degrees", "Percent")
TEXT_TEMPLATES = (
    "{adj} {noun}", "The {adj} {noun}", "{noun} {noun2}", "{adj} {noun} Club", "No {noun} Zone", "{noun} Ahead",
    "Welcome to {place}", "{place} {noun}", "{noun} Open", "Visit {place}", "{number} {unit}", "Exit {number}",
    "Route {number}", "Since {year}", "Room {number}", "{noun} Sale", "I Love {place}", "{adj} Vibes Only",
    "Save the {noun}", "Gate {number}", "{noun} of {place}", "Keep {adj}", "Best {noun} in Town",
)  # fmt: skip

STYLES = (
    "A realistic photograph of", "A close-up photo of", "A digital illustration of", "A vintage poster showing",
    "A watercolor painting of", "A cinematic shot of", "A high-resolution photo of", "A cartoon drawing of",
)  # fmt: skip
# (object, how the text is on it)
OBJECTS = (
    ("a wooden signpost", "clearly marked"), ("a neon sign", "glowing with the words"),
    ("a chalkboard menu", "that reads"), ("a coffee mug", "printed with"), ("a birthday cake", "iced with"),
    ("a large billboard", "displaying"), ("a white t-shirt", "printed with"), ("a street banner", "that says"),
    ("a shop window decal", "announcing"), ("a paper notebook page", "handwritten with"),
    ("a brass plaque", "engraved with"), ("a movie theater marquee", "spelling out"),
    ("a delivery truck", "painted with"), ("a graffiti wall", "spray-painted with"),
    ("a hot air balloon", "bearing the words"), ("a book cover", "titled"), ("a glowing hologram", "reading"),
    ("a cardboard box", "stamped"), ("a road sign", "warning"), ("a sticky note", "scribbled with"),
)  # fmt: skip
SETTINGS = (
    "on a busy city street at night", "in a misty pine forest", "under a clear blue sky", "in a cozy kitchen",
    "at a sunny beach", "in a dimly lit workshop", "on a snowy mountain pass", "in a crowded market",
    "beside a quiet lake at dawn", "in a futuristic city", "on a rainy afternoon", "in a school classroom",
    "at a desert roadside", "in a colorful playground", "on a wooden table with soft lighting",
    "in an old library", "at a lively street festival", "in a neon-lit alley", "on a farm at sunset",
    "in a modern office lobby",
)  # fmt: skip


def texts(rng: np.random.Generator, count: int, exclude: frozenset[str] = frozenset()) -> list[str]:
    """`count` short texts drawn from the templates, distinct as OCR targets (`key`) and none whose key is in
    `exclude`; ValueError if there are not enough."""
    seen: dict[str, str] = {}
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"only {len(seen)} distinct texts found; ask for fewer than {count}")
        template = TEXT_TEMPLATES[rng.integers(len(TEXT_TEMPLATES))]
        noun, noun2 = rng.choice(NOUNS, 2, replace=False)
        text = template.format(
            adj=ADJECTIVES[rng.integers(len(ADJECTIVES))],
            noun=noun,
            noun2=noun2,
            place=PLACES[rng.integers(len(PLACES))],
            unit=UNITS[rng.integers(len(UNITS))],
            number=int(rng.integers(1, 500)),
            year=int(rng.integers(1890, 2025)),
        )
        if key(text) not in exclude:
            seen.setdefault(key(text), text)
    return list(seen.values())


def key(text: str) -> str:
    """A text as the OCR reward compares it (no whitespace, lower case): texts with equal keys are the same target."""
    return "".join(text.split()).lower()


def scene(rng: np.random.Generator, text: str) -> str:
    """One prompt: style, object, the quoted text, setting."""
    thing, how = OBJECTS[rng.integers(len(OBJECTS))]
    return f'{STYLES[rng.integers(len(STYLES))]} {thing} {how} "{text}", {SETTINGS[rng.integers(len(SETTINGS))]}.'


def generate(n_train: int, n_test: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, test) prompts: distinct within each split; every test text is one no training prompt quotes.

    The test split gets its own texts, one prompt each; training prompts draw from the other texts, several
    scenes per text (about four), as a set with many phrasings of the same word would.
    """
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train={n_train}, n_test={n_test}: expected counts >= 0")
    rng = np.random.default_rng(seed)
    test_texts = texts(rng, n_test)
    train_texts = texts(rng, max(1, n_train // 4), exclude=frozenset(map(key, test_texts))) if n_train else []
    test = [scene(rng, text) for text in test_texts]
    train: dict[str, None] = {}
    for text in itertools.cycle(train_texts):
        if len(train) >= n_train:
            break
        train.setdefault(scene(rng, text))
    return list(train), test


def write_lines(path: Path, lines: Sequence[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rewardflow_ocr.prompts", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for train.txt and test.txt")
    parser.add_argument("--n", type=int, default=20000, help="training prompts (default 20000)")
    parser.add_argument("--n-test", type=int, default=None, help="held-out prompts (default n/20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)
    n_test = args.n // 20 if args.n_test is None else args.n_test
    try:
        train, test = generate(args.n, n_test, args.seed)
    except ValueError as exc:
        parser.error(str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, prompts in (("train.txt", train), ("test.txt", test)):
        write_lines(args.out / name, prompts)
        print(f"{args.out / name}: {len(prompts)} prompts")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
