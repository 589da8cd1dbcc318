"""One "did you mean" for every unknown name (services, rewards, presets, config keys, prompt sets).

It lives in the wire package, the lowest layer that every part (kit, trainer, CLI) imports, so that a
typo gets the same kind of answer wherever it is made.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

CUTOFF = 0.6
"""difflib's default: the least similarity (0..1) of a suggestion."""
MARGIN = 0.08
"""Suggestions must be within this of the best one's similarity."""
LIST_AT_MOST = 20
"""Known names are always listed up to this many; beyond it, only when nothing close was found."""


def close_matches(name: str, known: Iterable[str], n: int = 3) -> list[str]:
    """Known names close to `name`, best first: difflib's similarity of the whole names, ignoring case, or of
    their last dotted parts (config keys: 'learning_rate' finds 'train.learning_rate'). Only the names about
    as close as the best one are kept, so a clear match comes alone."""
    scores: dict[str, float] = {}
    leaf = name.rsplit(".", 1)[-1].lower()
    for candidate in dict.fromkeys(known):
        whole = difflib.SequenceMatcher(None, name.lower(), candidate.lower()).ratio()
        last = candidate.rsplit(".", 1)[-1].lower()
        part = difflib.SequenceMatcher(None, leaf, last).ratio() if "." in candidate else 0.0
        scores[candidate] = max(whole, part)
    ranked = sorted((c for c in scores if scores[c] >= CUTOFF), key=lambda c: -scores[c])
    return [c for c in ranked if scores[c] >= scores[ranked[0]] - MARGIN][:n]


def _quoted_alternatives(names: Sequence[str]) -> str:
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def did_you_mean(
    name: str, known: Iterable[str], what: str = "service", suggestions: Sequence[str] | None = None
) -> str:
    """ "unknown <what> 'x'; did you mean 'y'? (known <what>s: a, b, c)"; the list is left out when it is long
    and something close was found. `suggestions` replaces the close matches computed here."""
    names = list(dict.fromkeys(known))
    close = list(suggestions) if suggestions is not None else close_matches(name, names)
    message = f"unknown {what} {name!r}"
    if close:
        message += f"; did you mean {_quoted_alternatives(close)}?"
    if not close or len(names) <= LIST_AT_MOST:
        message += f" (known {what}s: {', '.join(names) if names else 'none'})"
    return message
