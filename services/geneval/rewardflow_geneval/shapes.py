"""The shapes world: seeded renders of GenEval metadata as filled shapes on white (numpy only, no downloads).

`render(entry, rng)` draws a (64, 64, 3) uint8 image that satisfies a GenEval metadata entry of the
SHAPES world (metadata.SHAPES) exactly: the objects its include clauses name and nothing else, in pure
palette colours (no anti-aliasing), non-overlapping, and placed so GenEval's position rule
(rules.relative_position) holds for position clauses. `scene_for` gives the layout, `render_scene`
draws any layout (e.g. a deliberately wrong one). shapes_detector.py reads such images back exactly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from rewardflow_geneval.metadata import SHAPES, Requirement, Spec, parse_metadata
from rewardflow_geneval.rules import Box, Thresholds, relative_position

IMAGE_SIZE = 64
BACKGROUND = (255, 255, 255)
"""Plain white background."""
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (25, 170, 25),
    "blue": (25, 60, 230),
    "yellow": (240, 210, 0),
}
"""The world's colours, one per colour word: RGB distances >= 187 between them and >= 259 from white."""
SHAPE_NAMES: tuple[str, ...] = SHAPES.objects

# Layout rules in pixels of a 64-pixel image (scaled for other sizes).
MIN_SIDE, MAX_SIDE = 12, 26
"""Object bounding-box sides are drawn from this range (tighter for crowded scenes, see _side_range)."""
GAP = 3
"""Least gap between two objects' bounding boxes, so that they never touch."""
MARGIN = 1
"""Least gap between an object and the image border."""
MIN_SEPARATION = 12
"""Least distance between the centres of a position pair along the relation's axis."""
MAX_OBJECTS = 4
LAYOUT_TRIES = 400
"""Whole-layout attempts before render() gives up on an entry."""


@dataclass(frozen=True)
class ShapeObject:
    """One filled shape: class ("circle", "square", "triangle"), palette colour, centre (px) and bbox side (px)."""

    shape: str
    color: str
    cx: float
    cy: float
    size: float

    @property
    def box(self) -> Box:
        """The nominal bounding box (x1, y1, x2, y2)."""
        h = self.size / 2
        return (self.cx - h, self.cy - h, self.cx + h, self.cy + h)


@lru_cache(maxsize=8)
def _pixel_centres(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return xs, ys


def object_mask(obj: ShapeObject, size: int = IMAGE_SIZE) -> np.ndarray:
    """(size, size) bool: the pixels whose centres lie inside the shape (no anti-aliasing)."""
    xs, ys = _pixel_centres(size)
    return shape_mask(obj.shape, obj.cx, obj.cy, obj.size, xs, ys)


def shape_mask(shape: str, cx: float, cy: float, side: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Which of the points (xs, ys) lie inside `shape` with bounding-box centre (cx, cy) and side `side`."""
    h = side / 2
    dx, dy = xs - cx, ys - cy
    if shape == "square":
        return (np.abs(dx) < h) & (np.abs(dy) < h)
    if shape == "circle":
        return dx * dx + dy * dy < h * h
    if shape == "triangle":  # upright isosceles: apex at the top centre, base along the bottom edge
        return (dy > -h) & (dy < h) & (np.abs(dx) < (dy + h) / 2)
    raise ValueError(f"shape {shape!r}: expected one of {', '.join(SHAPE_NAMES)}")


def mask_box(mask: np.ndarray) -> Box:
    """(x1, y1, x2 + 1, y2 + 1) around a non-empty mask: the box a detector derives from it."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def render_scene(objects: Sequence[ShapeObject], size: int = IMAGE_SIZE) -> np.ndarray:
    """Draw `objects` (later ones on top) on the white background: uint8 (size, size, 3)."""
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for obj in objects:
        if obj.color not in PALETTE:
            raise ValueError(f"colour {obj.color!r}: expected one of {', '.join(PALETTE)}")
        image[object_mask(obj, size)] = PALETTE[obj.color]
    return image


def render(entry: Mapping[str, Any], rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """A uint8 (size, size, 3) image that satisfies the GenEval metadata `entry` (tag/include/exclude/position)."""
    return render_scene(scene_for(entry, rng, size), size)


def scene_for(entry: Mapping[str, Any], rng: np.random.Generator, size: int = IMAGE_SIZE) -> list[ShapeObject]:
    """The layout render() draws: the entry's objects only, rejection-sampled; ValueError naming the entry."""
    spec = parse_metadata(entry, SHAPES)
    slots = _slots(spec, entry)
    scale = size / IMAGE_SIZE
    for _ in range(LAYOUT_TRIES):
        objects = _try_layout(spec, slots, rng, size, scale)
        if objects is not None:
            return objects
    raise ValueError(f"{_name(entry)}: found no layout in {LAYOUT_TRIES} tries at {size}x{size} px")


def _name(entry: Mapping[str, Any]) -> str:
    return f"entry {entry.get('prompt') or json.dumps(dict(entry))!r}"


def _slots(spec: Spec, entry: Mapping[str, Any]) -> list[tuple[int, Requirement]]:
    """(include clause index, clause) per object to draw; ValueError for entries no scene can satisfy."""
    names = [req.class_name for req in spec.include]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{_name(entry)}: class {repeated[0]!r} in two include clauses; expected one clause per class")
    slots = [(i, req) for i, req in enumerate(spec.include) for _ in range(req.count)]
    if len(slots) > MAX_OBJECTS:
        raise ValueError(f"{_name(entry)}: asks for {len(slots)} objects; the shapes world draws at most {MAX_OBJECTS}")
    wanted = {req.class_name: req.count for req in spec.include}
    for excl in spec.exclude:
        if wanted.get(excl.class_name, 0) >= excl.count:
            have = wanted[excl.class_name]
            raise ValueError(f"{_name(entry)}: includes {have} {excl.class_name} but excludes {excl.count} or more")
    return slots


def _side_range(n_objects: int, scale: float) -> tuple[int, int]:
    """Bounding-box sides for a scene of n objects: smaller when crowded, so that layouts are found quickly."""
    top = {1: MAX_SIDE, 2: 24, 3: 20}.get(n_objects, 18)
    return max(round(MIN_SIDE * scale), 3), max(round(top * scale), 3)


def _try_layout(
    spec: Spec, slots: list[tuple[int, Requirement]], rng: np.random.Generator, size: int, scale: float
) -> list[ShapeObject] | None:
    """One random layout, or None if an object found no free place or a position clause does not hold."""
    lo, hi = _side_range(len(slots), scale)
    margin, gap = MARGIN * scale, GAP * scale
    objects: list[ShapeObject] = []
    boxes: list[Box] = []
    for _, req in slots:
        side = int(rng.integers(lo, hi + 1))
        x0, y0 = (int(rng.integers(round(margin), size - round(margin) - side + 1)) for _ in range(2))
        box = (x0, y0, x0 + side, y0 + side)
        if any(_too_close(box, other, gap) for other in boxes):
            return None
        colour = req.color or str(rng.choice(SHAPES.colors))
        objects.append(ShapeObject(req.class_name, colour, x0 + side / 2, y0 + side / 2, float(side)))
        boxes.append(box)
    return objects if _positions_hold(spec, slots, objects, size, scale) else None


def _too_close(a: Box, b: Box, gap: float) -> bool:
    """Whether two boxes come closer than `gap` on both axes (i.e. they overlap or nearly touch)."""
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def _positions_hold(
    spec: Spec, slots: list[tuple[int, Requirement]], objects: list[ShapeObject], size: int, scale: float
) -> bool:
    """Every position clause holds under GenEval's rule on the drawn boxes, clearly (>= 12 px along its axis,
    more than across it)."""
    threshold = Thresholds().position
    for i, req in enumerate(spec.include):
        if req.position is None:
            continue
        relation, target = req.position
        mine = [obj for (k, _), obj in zip(slots, objects, strict=True) if k == i]
        theirs = [obj for (k, _), obj in zip(slots, objects, strict=True) if k == target]
        for a in mine:
            for b in theirs:
                box_a, box_b = mask_box(object_mask(a, size)), mask_box(object_mask(b, size))
                if relation not in relative_position(box_a, box_b, threshold):
                    return False
                along, across = _offsets(box_a, box_b, relation)
                if along < MIN_SEPARATION * scale or along <= across:
                    return False
    return True


def _offsets(box_a: Box, box_b: Box, relation: str) -> tuple[float, float]:
    """|centre offset| along the relation's axis and across it."""
    dx = abs((box_a[0] + box_a[2]) - (box_b[0] + box_b[2])) / 2
    dy = abs((box_a[1] + box_a[3]) - (box_b[1] + box_b[3])) / 2
    return (dx, dy) if relation in ("left of", "right of") else (dy, dx)
