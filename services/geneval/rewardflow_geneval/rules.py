"""GenEval's rules as pure functions: detections + metadata -> verdict and dense score (no models, no I/O).

Facts from djghosh13/geneval `evaluation/evaluate_images.py` (our own code, same rules):
- a detection counts if its confidence is > 0.3, or > 0.9 when the tag is `counting`;
- per class at most 16 detections, most confident first; overlap suppression is off by default
  (max_overlap 1.0: nothing is suppressed);
- `include` clauses hold together (AND): at least `count` objects of the class; a colour clause needs
  the top `count` objects all classified as that colour (CLIP on the masked crop); a position clause
  needs every one of the top `count` objects to stand in the relation to every object matched by
  the target clause, where the relation comes from box centres after subtracting 0.1 x the sum of
  the two boxes' sizes (`relative_position` below); colour and position are checked only on
  the most confident objects, position only if the clause's count and colour held;
- an `exclude` clause fails if `count` or more objects of the class are detected.
`strict` is GenEval's verdict (every clause holds). `score` is the dense reward Flow-GRPO trains on
(yifan123/reward-server `evaluate_reward`, same objects after the same thresholds): the plain mean of
per-clause credits, see `dense_credits`; it can be negative (`dense_score_range`). docs/geneval.md
has the formula, its quirks and a worked example.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewardflow_geneval.metadata import COLORS, Requirement, Spec

Box = tuple[float, float, float, float]
"""(x1, y1, x2, y2) in pixels, y downwards."""


@dataclass(frozen=True)
class Thresholds:
    """GenEval's evaluation options (`--options threshold=... counting_threshold=...`), same defaults."""

    confidence: float = 0.3
    counting_confidence: float = 0.9
    max_objects: int = 16
    max_overlap: float = 1.0
    """Greedy suppression of same-class boxes with IoU >= this; 1.0 (GenEval's default) keeps all."""
    position: float = 0.1

    def for_tag(self, tag: str) -> float:
        """The confidence a detection must exceed for an image of this tag."""
        return self.counting_confidence if tag == "counting" else self.confidence

    @property
    def lowest(self) -> float:
        """The lowest confidence any tag accepts: a detector may drop everything at or below it."""
        return min(self.confidence, self.counting_confidence)


@dataclass(frozen=True)
class Detection:
    """One detected object: GenEval class name, confidence, box; `ref` lets the caller find its mask."""

    class_name: str
    score: float
    box: Box
    ref: int = -1


@dataclass(frozen=True)
class Check:
    """One requirement and whether it held; `reason` says what was found when it did not."""

    clause: str
    kind: str
    """"count", "color", "position" or "exclude"."""
    expected: str
    met: bool
    reason: str = ""


@dataclass
class Verdict:
    """The outcome for one image: GenEval's strict verdict and its checks, the dense credits and score."""

    tag: str
    checks: list[Check]
    objects: dict[str, list[Detection]]
    colors: dict[str, list[str]] = field(default_factory=dict)
    credits: list[float] = field(default_factory=list)
    """Flow-GRPO's dense credits in the order its reward server appends them (`dense_credits`)."""

    @property
    def strict(self) -> bool:
        return all(check.met for check in self.checks)

    @property
    def score(self) -> float:
        """The dense score: the plain mean of `credits` (0.0 when there are none)."""
        return dense_score(self.credits)

    @property
    def reasons(self) -> list[str]:
        """Why the image failed, one sentence per unmet check (empty when it passed)."""
        return [check.reason for check in self.checks if not check.met]

    def details(self) -> dict[str, Any]:
        """JSON-safe details for the wire: what was detected (counts, boxes, colours) and what failed."""
        objects = []
        for name, found in self.objects.items():
            colours = self.colors.get(name, [])
            for rank, det in enumerate(found):
                entry: dict[str, Any] = {
                    "class": name,
                    "score": round(det.score, 4),
                    "box": [round(v, 1) for v in det.box],
                }
                if rank < len(colours):
                    entry["color"] = colours[rank]
                objects.append(entry)
        return {
            "tag": self.tag,
            "strict": self.strict,
            "score": self.score,
            "credits": list(self.credits),
            "detected": {name: len(found) for name, found in self.objects.items()},
            "objects": objects,
            "failed": self.reasons,
            "checks": [{"clause": c.clause, "kind": c.kind, "expected": c.expected, "met": c.met} for c in self.checks],
        }


# Adapted from djghosh13/geneval evaluation/evaluate_images.py (compute_iou): same +1 pixel convention.
def box_iou(box_a: Box, box_b: Box) -> float:
    """Intersection over union of two boxes, counting pixels inclusively as GenEval does."""

    def area(box: Sequence[float]) -> float:
        return max(box[2] - box[0] + 1, 0) * max(box[3] - box[1] + 1, 0)

    inter = area((max(box_a[0], box_b[0]), max(box_a[1], box_b[1]), min(box_a[2], box_b[2]), min(box_a[3], box_b[3])))
    union = area(box_a) + area(box_b) - inter
    return inter / union if union else 0.0


def select_objects(detections: Iterable[Detection], tag: str, thresholds: Thresholds) -> dict[str, list[Detection]]:
    """Class -> detections GenEval keeps for an image of `tag`: above threshold, most confident first, capped."""
    threshold = thresholds.for_tag(tag)
    by_class: dict[str, list[Detection]] = {}
    for det in detections:
        if det.score > threshold:
            by_class.setdefault(det.class_name, []).append(det)
    objects = {}
    for name, found in by_class.items():
        ranked = sorted(found, key=lambda d: -d.score)[: thresholds.max_objects]
        kept: list[Detection] = []
        while ranked:
            best = ranked.pop(0)
            kept.append(best)
            if thresholds.max_overlap < 1:
                ranked = [d for d in ranked if box_iou(best.box, d.box) < thresholds.max_overlap]
        objects[name] = kept
    return objects


# Adapted from djghosh13/geneval evaluation/evaluate_images.py (relative_position): same geometry.
def relative_position(box_a: Box, box_b: Box, threshold: float = 0.1) -> set[str]:
    """Relations of A to B ("left of", "right of", "above", "below"); empty when they overlap too much.

    The centre offset shrinks by `threshold` x (size of A + size of B) per axis; a relation holds when
    the shrunk offset, divided by the length of the full offset, exceeds 0.5 along that axis.
    """
    boxes = np.array([box_a, box_b], dtype=np.float64).reshape(2, 2, 2)
    center_a, center_b = boxes.mean(axis=-2)
    size_a, size_b = np.abs(boxes[:, 1] - boxes[:, 0])
    offset = center_a - center_b
    revised = np.maximum(np.abs(offset) - threshold * (size_a + size_b), 0) * np.sign(offset)
    if np.all(np.abs(revised) < 1e-3):
        return set()
    dx, dy = revised / np.linalg.norm(offset)
    relations = set()
    if dx < -0.5:
        relations.add("left of")
    if dx > 0.5:
        relations.add("right of")
    if dy < -0.5:
        relations.add("above")
    if dy > 0.5:
        relations.add("below")
    return relations


def colour_requests(objects: Mapping[str, Sequence[Detection]], spec: Spec) -> dict[str, list[Detection]]:
    """Class -> the detections whose colour the rules will ask for (the top `count` of each colour clause
    whose count holds); the caller classifies them, most confident first, and passes the colours back."""
    wanted: dict[str, int] = {}
    for req in spec.include:
        if req.color is not None and len(objects.get(req.class_name, ())) >= req.count:
            wanted[req.class_name] = max(wanted.get(req.class_name, 0), req.count)
    return {name: list(objects[name][:n]) for name, n in wanted.items()}


def evaluate(
    objects: Mapping[str, Sequence[Detection]],
    spec: Spec,
    colors: Mapping[str, Sequence[str]] | None = None,
    thresholds: Thresholds | None = None,
) -> Verdict:
    """Check `spec` against `objects` (from select_objects) and `colors` (class -> colours of its top objects)."""
    thresholds = thresholds or Thresholds()
    colors = colors or {}
    checks: list[Check] = []
    matched: list[list[Detection] | None] = []
    for i, req in enumerate(spec.include):
        clause = f"include[{i}]"
        name = req.class_name
        found = list(objects.get(name, ()))[: req.count]
        ok = len(found) >= req.count
        checks.append(
            Check(
                clause,
                "count",
                f"at least {req.count} {name}",
                ok,
                f"expected at least {req.count} {name}, found {len(found)}",
            )
        )
        if req.color is not None:
            checks.append(_colour_check(clause, req.color, name, req.count, found, colors, ok))
            ok = ok and checks[-1].met
        if req.position is not None:
            checks.append(_position_check(clause, req.position, name, found, spec, matched, ok, thresholds.position))
            ok = ok and checks[-1].met
        matched.append(found if ok else None)
    for i, excl in enumerate(spec.exclude):
        n = len(objects.get(excl.class_name, ()))
        checks.append(
            Check(
                f"exclude[{i}]",
                "exclude",
                f"fewer than {excl.count} {excl.class_name}",
                n < excl.count,
                f"expected fewer than {excl.count} {excl.class_name}, found {n}",
            )
        )
    used_colours = {name: list(colors.get(name, ())) for name in objects if colors.get(name)}
    return Verdict(
        tag=spec.tag,
        checks=checks,
        objects={k: list(v) for k, v in objects.items()},
        colors=used_colours,
        credits=dense_credits(objects, spec, colors, thresholds.position),
    )


def _colour_check(
    clause: str,
    colour: str,
    name: str,
    count: int,
    found: list[Detection],
    colors: Mapping[str, Sequence[str]],
    ok: bool,
) -> Check:
    expected = f"{count} {colour} {name}"
    if not ok:
        return Check(clause, "color", expected, False, f"colour of {name} not checked: fewer than {count} found")
    seen = _top_colours(colors, name, len(found), expected)
    hits = seen.count(colour)
    tally = ", ".join(f"{seen.count(c)} {c}" for c in COLORS if c in seen)
    return Check(
        clause, "color", expected, hits >= count, f"expected {expected}, found {hits} {colour} (colours: {tally})"
    )


def _position_check(
    clause: str,
    position: tuple[str, int],
    name: str,
    found: list[Detection],
    spec: Spec,
    matched: list[list[Detection] | None],
    ok: bool,
    threshold: float,
) -> Check:
    relation, target = position
    target_name = spec.include[target].class_name
    expected = f"{name} {relation} {target_name}"
    if not ok:
        return Check(clause, "position", expected, False, f"position of {name} not checked: its own clause failed")
    targets = matched[target]
    if targets is None:
        return Check(clause, "position", expected, False, f"no {target_name} matched to place {name} {relation}")
    for obj in found:
        for other in targets:
            relations = relative_position(obj.box, other.box, threshold)
            if relation not in relations:
                seen = " and ".join(sorted(relations)) if relations else "overlapping"
                return Check(
                    clause, "position", expected, False, f"expected {expected}, found {name} {seen} {target_name}"
                )
    return Check(clause, "position", expected, True)


def _top_colours(colors: Mapping[str, Sequence[str]], name: str, n: int, expected: str) -> list[str]:
    """The colours of the `n` most confident objects of `name`; ValueError if the caller classified fewer."""
    seen = list(colors.get(name, ()))[:n]
    if len(seen) < n:
        raise ValueError(f"colors[{name!r}] has {len(seen)} colours; the rules need the top {n} ({expected})")
    return seen


def dense_credits(
    objects: Mapping[str, Sequence[Detection]],
    spec: Spec,
    colors: Mapping[str, Sequence[str]] | None = None,
    position_threshold: float = 0.1,
) -> list[float]:
    """Flow-GRPO's per-clause credits (yifan123/reward-server `evaluate_reward`), in the order it appends them.

    Per include clause with count k and N kept objects of its class (all of them, not the top k):
    count credit 1 - |k - N| / k, unfloored (3 dogs for "a dog" give -1). If N != k the clause fails
    and adds one 0.0 when it has a colour or a position. Else a colour adds 1 - |k - hits| / k and the
    clause holds only if every object has the colour; if it still holds, a position adds 0.0 when its
    target clause failed, else 1.0 when every object stands in the relation to every target object,
    and 0.0 followed by 1.0 when one does not (the server appends 1.0 after its loop either way).
    Exclude clauses add nothing.
    """
    colors = colors or {}
    credits: list[float] = []
    held: list[Sequence[Detection] | None] = []
    for req in spec.include:
        found = list(objects.get(req.class_name, ()))
        ok = _clause_credits(req, found, colors, held, position_threshold, credits)
        held.append(found if ok else None)
    return credits


def _clause_credits(
    req: Requirement,
    found: list[Detection],
    colors: Mapping[str, Sequence[str]],
    held: list[Sequence[Detection] | None],
    position_threshold: float,
    credits: list[float],
) -> bool:
    """Append one include clause's credits to `credits`; whether the clause held (a position target)."""
    k = req.count
    credits.append(1 - abs(k - len(found)) / k)
    if len(found) != k:
        if req.color is not None or req.position is not None:
            credits.append(0.0)
        return False
    if req.color is not None:
        hits = _top_colours(colors, req.class_name, k, req.describe()).count(req.color)
        credits.append(1 - abs(k - hits) / k)
        if hits != k:
            return False  # the reference skips the position check of a clause whose colour failed
    if req.position is None:
        return True
    relation, target = req.position
    targets = held[target]
    if targets is None:
        credits.append(0.0)
        return False
    ok = all(relation in relative_position(a.box, b.box, position_threshold) for a in found for b in targets)
    if not ok:
        credits.append(0.0)
    credits.append(1.0)  # the reference's quirk: a failed relation gives 0.0 and then 1.0 as well
    return ok


def dense_score(credits: Sequence[float]) -> float:
    """The plain mean of the credits, summed in order as the reference does; 0.0 for none."""
    return sum(credits) / len(credits) if credits else 0.0


def dense_score_range(max_objects: int) -> tuple[float, float]:
    """(lowest, highest) dense score when at most `max_objects` objects of a class are kept.

    Colour and position credits lie in [0, 1]; a count credit is lowest for k = 1 and N = max_objects,
    1 - (max_objects - 1) = 2 - max_objects, and a mean is never below its lowest credit, so the bound
    is min(0, 2 - max_objects): -14 with GenEval's 16, reached by "a dog" with 16 dogs kept.
    """
    return (min(0.0, 2.0 - max_objects), 1.0)
