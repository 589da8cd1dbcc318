"""GenEval's vocabulary (COCO classes, colours, relations, tags) and the per-image metadata it checks.

A `World` names the vocabulary metadata is validated against: `COCO` (GenEval's own, the default) or
`SHAPES` (the procedural shapes world of rewardflow_geneval.shapes).

The metadata format is GenEval's `prompts/evaluation_metadata.jsonl`, read as is:
`{"tag": "position", "include": [{"class": "couch", "count": 1}, {"class": "bird", "count": 1,
"position": ["left of", 0]}], "exclude": [...], "prompt": "..."}`. A malformed entry raises
MetadataError naming the field, so the service can answer 4xx naming the image.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# From djghosh13/geneval evaluation/object_names.txt (the 80 COCO classes in COCO's order, GenEval's spelling).
OBJECT_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "computer mouse", "tv remote",
    "computer keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock",
    "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
# From djghosh13/geneval evaluation/evaluate_images.py (COLORS) and prompts/create_prompts.py (positions).
COLORS: tuple[str, ...] = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
POSITIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
TAGS: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
"""GenEval's six tasks, in the order its summary prints them."""


@dataclass(frozen=True)
class World:
    """A vocabulary GenEval's prompts and metadata draw from: COCO (the benchmark's) or a synthetic one."""

    name: str
    objects: tuple[str, ...]
    colors: tuple[str, ...]
    positions: tuple[str, ...] = POSITIONS


COCO = World("coco", OBJECT_NAMES, COLORS)
SHAPES = World("shapes", ("circle", "square", "triangle"), ("red", "green", "blue", "yellow"))
"""The procedural shapes world (rewardflow_geneval.shapes): three filled shapes in four pure colours."""
WORLDS: dict[str, World] = {"coco": COCO, "shapes": SHAPES}


class MetadataError(ValueError):
    """A metadata entry GenEval cannot check; `field` is a path such as `include[1].count`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Requirement:
    """An `include` clause: at least `count` objects of `class_name` (optionally of a colour, or placed
    `position[0]` relative to the objects of include clause number `position[1]`)."""

    class_name: str
    count: int
    color: str | None = None
    position: tuple[str, int] | None = None

    def describe(self) -> str:
        """E.g. "2 red dog"; "1 bird left of include[0]"."""
        colour = f"{self.color} " if self.color else ""
        return f"{self.count} {colour}{self.class_name}"


@dataclass(frozen=True)
class Exclusion:
    """An `exclude` clause: fewer than `count` objects of `class_name`."""

    class_name: str
    count: int


@dataclass(frozen=True)
class Spec:
    """What one image must show: its tag, include clauses (all must hold) and exclude clauses (none may fail)."""

    tag: str
    include: tuple[Requirement, ...]
    exclude: tuple[Exclusion, ...] = ()
    prompt: str | None = None


def parse_metadata(metadata: Mapping[str, Any], world: World = COCO) -> Spec:
    """GenEval metadata (a dict as in evaluation_metadata.jsonl) -> Spec; MetadataError naming the bad field.

    Class, colour and relation names must belong to `world` (GenEval's COCO vocabulary by default).
    """
    if not isinstance(metadata, Mapping):
        raise MetadataError("metadata", f"expected a map with 'tag' and 'include', got {type(metadata).__name__}")
    if "tag" not in metadata:
        raise MetadataError("tag", f"missing; expected one of {', '.join(TAGS)}")
    tag = metadata["tag"]
    if tag not in TAGS:
        raise MetadataError("tag", f"{tag!r} is not a GenEval tag; expected one of {', '.join(TAGS)}")
    if "include" not in metadata:
        raise MetadataError("include", "missing; expected a list of {class, count[, color][, position]}")
    include = _clauses(metadata["include"], "include")
    exclude = _clauses(metadata.get("exclude", []), "exclude")
    if not include:
        raise MetadataError("include", "empty; expected at least one {class, count} clause")
    requirements = tuple(_requirement(clause, f"include[{i}]", i, world) for i, clause in enumerate(include))
    exclusions = tuple(_exclusion(clause, f"exclude[{i}]", world) for i, clause in enumerate(exclude))
    prompt = metadata.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise MetadataError("prompt", f"expected a string, got {type(prompt).__name__}")
    return Spec(tag=tag, include=requirements, exclude=exclusions, prompt=prompt)


def _clauses(value: Any, field: str) -> list[Mapping[str, Any]]:
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise MetadataError(field, f"expected a list of clauses, got {type(value).__name__}")
    for i, clause in enumerate(value):
        if not isinstance(clause, Mapping):
            raise MetadataError(
                f"{field}[{i}]", f"expected a map with 'class' and 'count', got {type(clause).__name__}"
            )
    return list(value)


def _class_errors(world: World) -> tuple[str, str]:
    """(what a missing class, what an unknown class is told), naming the world's vocabulary."""
    if world == COCO:
        return (
            "missing; expected one of the 80 COCO class names (e.g. 'dog')",
            "is not one of GenEval's 80 COCO classes (e.g. 'dog', 'traffic light', 'computer mouse')",
        )
    classes = ", ".join(world.objects)
    return (
        f"missing; expected one of the {world.name} world's classes ({classes})",
        f"is not one of the {world.name} world's classes ({classes})",
    )


def _class_and_count(clause: Mapping[str, Any], field: str, world: World) -> tuple[str, int]:
    missing, unknown = _class_errors(world)
    if "class" not in clause:
        raise MetadataError(f"{field}.class", missing)
    name = clause["class"]
    if not isinstance(name, str) or name not in world.objects:
        raise MetadataError(f"{field}.class", f"{name!r} {unknown}")
    count = clause.get("count")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise MetadataError(f"{field}.count", f"{count!r}; expected an integer >= 1")
    return name, count


def _requirement(clause: Mapping[str, Any], field: str, index: int, world: World) -> Requirement:
    name, count = _class_and_count(clause, field, world)
    color = clause.get("color")
    if color is not None and (not isinstance(color, str) or color not in world.colors):
        raise MetadataError(f"{field}.color", f"{color!r}; expected one of {', '.join(world.colors)}")
    position = clause.get("position")
    if position is not None:
        if (
            not isinstance(position, Sequence)
            or isinstance(position, str)
            or len(position) != 2
            or position[0] not in world.positions
            or isinstance(position[1], bool)
            or not isinstance(position[1], int)
        ):
            raise MetadataError(
                f"{field}.position",
                f"{position!r}; expected [relation, index] with relation one of {', '.join(world.positions)}",
            )
        if not 0 <= position[1] < index:
            raise MetadataError(
                f"{field}.position",
                f"target index {position[1]} must name an earlier include clause (0..{index - 1})",
            )
        position = (str(position[0]), int(position[1]))
    return Requirement(class_name=name, count=count, color=color, position=position)


def _exclusion(clause: Mapping[str, Any], field: str, world: World) -> Exclusion:
    name, count = _class_and_count(clause, field, world)
    return Exclusion(class_name=name, count=count)


def read_metadata_file(path: str | Path, world: World = COCO) -> list[dict[str, Any]]:
    """Entries of an evaluation_metadata.jsonl file (one JSON object per line, each with 'prompt'), validated
    against `world`'s vocabulary."""
    path = Path(path)
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        try:
            spec = parse_metadata(entry, world)
        except MetadataError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        if spec.prompt is None:
            raise ValueError(f"{path}:{number}: prompt: missing; every evaluation entry needs its prompt")
        entries.append(entry)
    if not entries:
        raise ValueError(f"{path}: no metadata entries")
    return entries
