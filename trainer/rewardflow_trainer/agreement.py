"""Scoring failures decided by every rank together, so that a failure one rank sees never leaves another waiting.

A rank's scoring can give up on its own: every replica down past reward.outage_grace_s (RewardOutage), a
service that refuses a batch, images without a finite score under reward.on_invalid_score = stop
(InvalidScores). The other ranks, whose services answered, would go on to the next collective (the gather of
the rewards) and wait there forever for a rank that is on its way out. So after scoring, before any other
collective, every rank all-reduces a failure flag; when it is set, the ranks exchange what went wrong and every
one of them raises the same error, the first failing rank's, naming that rank (after `on_outage`, on every rank,
when one of them saw an outage: the checkpoint that --resume continues from).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist
from accelerate.utils import gather_object
from rewardflow_proto.client import RewardServiceError

from rewardflow_trainer.rewards import InvalidScores, RewardOutage

if TYPE_CHECKING:
    from accelerate import Accelerator

T = TypeVar("T")
SCORING_ERRORS = (RewardServiceError, InvalidScores)
"""What scoring raises when it gives up (RewardOutage is a RewardServiceError)."""


@dataclass(frozen=True)
class FailureReport:
    """One rank's scoring failure in plain values (what travels between ranks)."""

    rank: int
    outage: bool
    invalid_scores: str | None = None
    """InvalidScores' message; None for a RewardServiceError, described by the fields below."""
    service: str = ""
    rewards: tuple[str, ...] = ()
    urls: tuple[str, ...] = ()
    reason: str = ""
    status: int | None = None
    images: tuple[int, int] | None = None

    @classmethod
    def of(cls, error: Exception, rank: int) -> FailureReport:
        if isinstance(error, InvalidScores):
            return cls(rank, outage=False, invalid_scores=str(error))
        assert isinstance(error, RewardServiceError)
        return cls(
            rank, isinstance(error, RewardOutage), None, error.service, tuple(error.rewards), tuple(error.urls),
            error.reason, error.status, error.images,
        )  # fmt: skip

    def error(self, world: int) -> Exception:
        """The error every rank raises: the failing rank's, with the rank named."""
        where = f"rank {self.rank} of {world}"
        if self.invalid_scores is not None:
            return InvalidScores(f"{where}: {self.invalid_scores}")
        reason = f"{self.reason} (seen by {where})"
        return RewardServiceError(self.service, self.rewards, self.urls, reason, self.status, self.images)


def scored_together(accelerator: Accelerator, work: Callable[[], T], on_outage: Callable[[], None] = lambda: None) -> T:
    """`work()` (which scores) on every rank, then one agreement: its result, or on every rank the same error when
    scoring gave up on any rank; `on_outage` runs first on every rank when one of them saw an outage."""
    if accelerator.num_processes == 1:
        try:
            return work()
        except RewardOutage:
            on_outage()
            raise
    failure: Exception | None = None
    result: Any = None
    try:
        result = work()
    except SCORING_ERRORS as error:
        failure = error
    reports = shared_failures(accelerator, failure)
    if not reports:
        return result
    if any(report.outage for report in reports):
        on_outage()
    raise reports[0].error(accelerator.num_processes) from failure


def shared_failures(accelerator: Accelerator, failure: Exception | None) -> list[FailureReport]:
    """Every rank's failure report, rank order ([] when no rank failed): a flag all-reduced, then (only after a
    failure) the reports gathered."""
    flag = torch.tensor([0 if failure is None else 1], dtype=torch.int64, device=accelerator.device)
    dist.all_reduce(flag)
    if int(flag.item()) == 0:
        return []
    mine = None if failure is None else FailureReport.of(failure, accelerator.process_index)
    return [report for report in gather_object([mine]) if report is not None]
