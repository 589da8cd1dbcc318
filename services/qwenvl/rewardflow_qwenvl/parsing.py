"""Reading the judge's answer: the integer in <Score>...</Score>, 1-5; anything else raises Unparsable."""

from __future__ import annotations

import re

SCORE_TAG = re.compile(r"<Score>\s*(\d+)\s*</Score>")
"""Flow-GRPO's pattern (first match), with blanks allowed inside the tag."""


class Unparsable(ValueError):
    """The answer holds no usable <Score>."""


def parse_score_tag(answer: str) -> int:
    """The 1-5 score inside the first <Score> tag of the answer."""
    match = SCORE_TAG.search(answer)
    if match is None:
        raise Unparsable("no '<Score>N</Score>' in the answer")
    score = int(match.group(1))
    if not 1 <= score <= 5:
        raise Unparsable(f"score {score} is outside 1-5")
    return score
