"""The OCR reward's target text and score: quoted text of the prompt vs the recognized text.

As in Flow-GRPO's OCR reward: both strings lose their whitespace and are lower-cased; the score is 1
when the target occurs in the recognized text, else 1 - min(Levenshtein, len(target)) / len(target).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Levenshtein

METADATA_KEY = "target_text"

_OPEN, _CLOSE = "\u201c", "\u201d"
_WHITESPACE = re.compile(r"\s+")


class MissingTarget(ValueError):
    """An item has no usable target text: neither quoted text in its prompt nor metadata target_text."""


def normalize(text: str) -> str:
    """`text` without any whitespace, lower-cased (the reference removes spaces and lower-cases)."""
    return _WHITESPACE.sub("", text).lower()


def quoted_text(prompt: str) -> str | None:
    """The text between the first pair of double quotes ("..." or \u201c...\u201d), or None.

    Straight quotes close at the next straight quote; a typographic opening quote closes at the
    typographic closing one. The leftmost complete pair of either kind wins. Linear in the prompt: a
    few str.find calls (a regex search retries every opening quote and is quadratic on unclosed ones).
    """
    straight = prompt.find('"')
    straight_end = prompt.find('"', straight + 1) if straight >= 0 else -1
    typographic = prompt.find(_OPEN)
    # Only the first opening quote can pair: a closing quote after a later one comes after the first too.
    typographic_end = prompt.find(_CLOSE, typographic + 1) if typographic >= 0 else -1
    if straight_end >= 0 and (typographic_end < 0 or straight < typographic):
        return prompt[straight + 1 : straight_end]
    if typographic_end >= 0:
        return prompt[typographic + 1 : typographic_end]
    return None


def target_text(prompt: str, metadata: dict[str, Any]) -> str:
    """The normalized target: the prompt's quoted text, else metadata["target_text"]; raises MissingTarget."""
    quoted = quoted_text(prompt)
    if quoted is not None and normalize(quoted):
        return normalize(quoted)
    given = metadata.get(METADATA_KEY)
    if given is not None and not isinstance(given, str):
        raise MissingTarget(f"metadata {METADATA_KEY} is {type(given).__name__} {given!r}, expected a string")
    if given is not None and normalize(given):
        return normalize(given)
    found = "an empty quoted text" if quoted is not None else "no text in double quotes"
    meta = "an empty" if given is not None else "no"
    raise MissingTarget(
        f"prompt {prompt[:80]!r} has {found} and {meta} metadata {METADATA_KEY}; expected '... \"TEXT\" ...' "
        f"in the prompt or a non-empty metadata {METADATA_KEY}"
    )


@dataclass(frozen=True)
class Match:
    """How well the recognized text matches the target.

    distance: the plain Levenshtein distance (0 when the target is contained); the score caps it at len(target).
    """

    score: float
    distance: int


def match(recognized: str, target: str) -> Match:
    """Score normalized `recognized` text against a normalized, non-empty `target`."""
    if not target:
        raise ValueError("target is empty; target_text() never returns an empty target")
    if target in recognized:
        return Match(1.0, 0)
    distance = Levenshtein.distance(recognized, target)
    return Match(1.0 - min(distance, len(target)) / len(target), distance)
