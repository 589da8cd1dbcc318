"""One model call for a merged batch: decode images, score, retry singly on failure, check every result.

Runs in the kit's model thread (never on the event loop). Per-item problems become ItemErrors in
their slots; the other items are still scored.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from rewardflow_proto import EncodedImage, ItemError, ScoreRequest

from rewardflow_kit.images import decode_image
from rewardflow_kit.scorer import Batch, ItemFailure, ItemScore, Scorer

log = logging.getLogger("rewardflow_kit")


@dataclass
class Outcome:
    """The scored items of one request, ready to become a ScoreResponse."""

    scores: dict[str, list[float | None]]
    errors: list[ItemError | None]
    details: list[dict[str, Any] | None] | None
    n_scored: int


def encodable(text: str) -> str:
    """`text` with lone surrogates (valid in JSON, not in UTF-8 or msgpack) escaped, so echoing it cannot fail."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _item_error(failure: ItemFailure) -> ItemError:
    return ItemError(code=encodable(str(failure.code)), message=encodable(str(failure.message)))


def _failure_from(exc: BaseException) -> ItemFailure:
    return ItemFailure("score_failed", f"the scorer raised {type(exc).__name__}: {exc}")


def _call(scorer: Scorer, batch: Batch) -> list[Any]:
    results = scorer.score(batch)
    if not isinstance(results, list) or len(results) != len(batch):
        got = len(results) if isinstance(results, list) else type(results).__name__
        raise RuntimeError(f"score() must return a list of {len(batch)} results, got {got}")
    return results


def score_batch(scorer: Scorer, batch: Batch) -> list[Any]:
    """scorer.score(batch); if the whole call fails, score item by item so one bad item fails alone."""
    try:
        return _call(scorer, batch)
    except Exception as exc:
        if len(batch) == 1:
            log.exception("scorer %s failed on a batch of 1", scorer.name)
            return [_failure_from(exc)]
        log.exception("scorer %s failed on a batch of %d; retrying item by item", scorer.name, len(batch))
    results: list[Any] = []
    for i in range(len(batch)):
        single = Batch(
            images=batch.images[i : i + 1],
            prompts=batch.prompts[i : i + 1],
            metadata=batch.metadata[i : i + 1],
            group_ids=batch.group_ids[i : i + 1],
        )
        try:
            results.append(_call(scorer, single)[0])
        except Exception as exc:
            results.append(_failure_from(exc))
    return results


def plain(value: Any, depth: int = 0) -> Any:
    """Details as msgpack/JSON-safe values: numpy scalars to Python, non-finite floats to None."""
    if depth > 16:
        return repr(value)
    if isinstance(value, dict):
        return {encodable(str(k)): plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, depth + 1) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist(), depth + 1)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return encodable(value)  # details may quote a prompt, which JSON lets carry lone surrogates
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return str(value)  # msgpack integers are 64-bit
    if value is None or isinstance(value, (bool, int, bytes)):
        return value
    return repr(value)


def check_result(result: Any, score_keys: tuple[str, ...]) -> tuple[dict[str, float] | None, Any, ItemError | None]:
    """One scorer result to (scores, details, None) or (None, None, error); non-finite is an error."""
    if isinstance(result, ItemFailure):
        return None, None, _item_error(result)
    if not isinstance(result, ItemScore):
        return None, None, ItemError("score_failed", f"the scorer returned {type(result).__name__}, not ItemScore")
    scores: dict[str, float] = {}
    for key in score_keys:
        if key not in result.scores:
            return None, None, ItemError("score_failed", f"the scorer returned no {key!r} score")
        try:
            value = float(result.scores[key])
        except (TypeError, ValueError):
            return None, None, ItemError("score_failed", f"score {key!r} is {result.scores[key]!r}, not a number")
        if not math.isfinite(value):
            return None, None, ItemError("non_finite", f"score {key!r} is {value}, not a finite number")
        scores[key] = value
    return scores, (None if result.details is None else plain(result.details)), None


def _request_images(request: ScoreRequest) -> list[np.ndarray | EncodedImage]:
    # An (N, H, W, 3) batch becomes N views into its one contiguous buffer, no copies.
    return list(request.images)


def score_requests(
    scorer: Scorer, requests: list[ScoreRequest], max_pixels: int, working_size: int | None = None
) -> list[Outcome]:
    """Score several requests as one merged batch and split the results back, in order.

    Encoded images are decoded here (downscaled towards `working_size` when given), just before the call.
    """
    errors: list[ItemError | None] = []
    batch = Batch(images=[], prompts=[], metadata=[], group_ids=[])
    slots: list[int] = []  # flat item index of each batch entry
    flat = 0
    for request in requests:
        metadata = request.metadata or [None] * len(request)
        group_ids = request.group_ids or [None] * len(request)
        for image, prompt, meta, group in zip(
            _request_images(request), request.prompts, metadata, group_ids, strict=True
        ):
            try:
                array = decode_image(image, max_pixels, working_size)
            except ItemFailure as failure:
                errors.append(_item_error(failure))
            else:
                errors.append(None)
                batch.images.append(array)
                batch.prompts.append(prompt)
                batch.metadata.append(meta if meta is not None else {})
                batch.group_ids.append(group)
                slots.append(flat)
            flat += 1

    keys = tuple(scorer.score_keys)
    flat_scores: list[dict[str, float] | None] = [None] * flat
    flat_details: list[Any] = [None] * flat
    if len(batch):
        for slot, result in zip(slots, score_batch(scorer, batch), strict=True):
            flat_scores[slot], flat_details[slot], errors[slot] = check_result(result, keys)

    outcomes: list[Outcome] = []
    start = 0
    for request in requests:
        end = start + len(request)
        item_scores = flat_scores[start:end]
        details = flat_details[start:end]
        outcomes.append(
            Outcome(
                scores={k: [None if s is None else s[k] for s in item_scores] for k in keys},
                errors=errors[start:end],
                details=details if any(d is not None for d in details) else None,
                n_scored=sum(s is not None for s in item_scores),
            )
        )
        start = end
    return outcomes
