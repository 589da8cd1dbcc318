"""Reading the judge's answers. A parser returns a value or raises Unparsable with the reason; never a silent 0."""

from __future__ import annotations

import re

FINAL_SCORE = re.compile(r"Final Score:\s*([1-5](?:\.\d+)?)")
"""Flow-GRPO's pattern: the first 'Final Score:' followed by a rating 1-5, decimals allowed ('3.5')."""
PREFERENCES = (
    (re.compile(r"image\s*1\s+is\s+(?:better|superior)", re.IGNORECASE), 1),
    (re.compile(r"image\s*2\s+is\s+(?:better|superior)", re.IGNORECASE), 2),
    (re.compile(r"(?:both\s+images\s+are\s+equally\s+good|equally\s+good)", re.IGNORECASE), 0),
)


class Unparsable(ValueError):
    """The answer does not hold what the judge was asked for."""


def parse_final_score(answer: str) -> float:
    """The rating (1-5) after 'Final Score:' in a pointwise answer."""
    match = FINAL_SCORE.search(answer)
    if match is None:
        raise Unparsable("no 'Final Score: <1-5>' in the answer")
    rating = float(match.group(1))
    if not 1.0 <= rating <= 5.0:  # '5.5' matches the pattern's '5' then '.5'
        raise Unparsable(f"rating {rating} is outside 1-5")
    return rating


def parse_preference(answer: str) -> int:
    """1 or 2 (the better image, in the order shown) or 0 (a tie) from a pairwise answer."""
    found = {value for pattern, value in PREFERENCES if pattern.search(answer)}
    if len(found) != 1:
        reason = "no verdict" if not found else "conflicting verdicts"
        raise Unparsable(f"{reason}: expected one of 'Image 1 is better', 'Image 2 is better', 'equally good'")
    return found.pop()
