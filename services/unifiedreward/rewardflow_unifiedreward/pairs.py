"""Pairwise mode: which pairs of a group the judge compares, and each image's win rate (Pref-GRPO).

A group of n images costs at most max(K, n) judge calls, K = REWARDFLOW_UNIFIEDREWARD_MAX_CALLS_PER_GROUP:
every pair once when n(n-1)/2 <= K, else each image meets its D next neighbours on a circle
(D = max(1, K // n), at most (n-1) // 2), n*D calls, every image in 2D comparisons, D of them shown first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field


def pair_schedule(n: int, max_calls: int) -> list[tuple[int, int]]:
    """Pairs (first shown, second shown) of positions 0..n-1 in a group."""
    if n < 2:
        return []
    if n * (n - 1) // 2 <= max_calls:
        # Every pair once; alternate which one is shown first so that position bias averages out.
        return [(i, j) if (i + j) % 2 else (j, i) for i in range(n) for j in range(i + 1, n)]
    offsets = max(1, min(max_calls // n, (n - 1) // 2))
    return [(i, (i + d) % n) for d in range(1, offsets + 1) for i in range(n)]


def calls_bound(n: int, max_calls: int) -> int:
    """The most judge calls a group of n costs (what the README states)."""
    return len(pair_schedule(n, max_calls))


@dataclass
class Tally:
    """One image's comparisons: wins, losses, ties and the answers that could not be read."""

    wins: int = 0
    losses: int = 0
    ties: int = 0
    unparsed: int = 0
    comparisons: list[dict[str, object]] = field(default_factory=list)

    @property
    def decided(self) -> int:
        return self.wins + self.losses + self.ties

    def win_rate(self) -> float:
        """(wins + ties / 2) / decided comparisons."""
        return (self.wins + 0.5 * self.ties) / self.decided


def tally(
    n: int, pairs: Sequence[tuple[int, int]], verdicts: Sequence[int | None], answers: Sequence[str]
) -> list[Tally]:
    """Each position's tally from the verdicts (1: first shown better, 2: second, 0: tie, None: unreadable)."""
    tallies: dict[int, Tally] = defaultdict(Tally)
    for (first, second), verdict, answer in zip(pairs, verdicts, answers, strict=True):
        for me, other, shown in ((first, second, 1), (second, first, 2)):
            t = tallies[me]
            if verdict is None:
                t.unparsed += 1
                outcome = "unparsed"
            elif verdict == 0:
                t.ties += 1
                outcome = "tie"
            elif verdict == shown:
                t.wins += 1
                outcome = "win"
            else:
                t.losses += 1
                outcome = "loss"
            t.comparisons.append({"opponent": other, "shown": shown, "outcome": outcome, "answer": answer})
    return [tallies[i] for i in range(n)]
