"""An exact detector for the shapes world: colour segmentation, connected components, a shape-template test.

No model: each pixel takes the nearest palette colour (shapes.PALETTE) if it lies within
`color_distance` of it in RGB, else it is background; each colour's 8-connected components of at
least `min_area` pixels, about as wide as high, are candidate objects. A component's class is the
ideal shape (square, circle, upright triangle) of the same area and centroid that overlaps it most
(IoU), if that IoU reaches `min_iou`. Area and centroid average over every pixel, so ragged or
blurred edges move them little (a bounding-box fill ratio, which one stray edge pixel changes by
~15 % on a 12-pixel object, misread 19 % of noisy renders; docs/geneval.md has the measurements).
Confidence is 1.0 and the colour is the segment's palette colour, so GenEval's rules run unchanged
without CLIP. A half-way blend of a colour and white is background, so soft outlines do not grow shapes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from rewardflow_geneval.metadata import SHAPES, parse_metadata
from rewardflow_geneval.rules import Box, Detection, Thresholds, Verdict, colour_requests, evaluate, select_objects
from rewardflow_geneval.shapes import IMAGE_SIZE, PALETTE, SHAPE_NAMES, shape_mask

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass
class ShapeDetections:
    """One image's objects (Detection.ref indexes `colors` and `masks`), their colours and masks (K, H, W) bool."""

    detections: list[Detection]
    colors: list[str]
    masks: np.ndarray


@dataclass(frozen=True)
class ShapesDetector:
    """Reads circles, squares and triangles in palette colours off an image; thresholds in 64-pixel units."""

    palette: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(PALETTE))
    color_distance: float = 110.0
    """A pixel within this RGB distance of its nearest palette colour has that colour; else background."""
    min_area: float = 12.0
    """Components smaller than this (pixels of a 64x64 image, scaled by area) are noise, not objects."""
    min_iou: float = 0.6
    """Least IoU with its best-fitting ideal shape for a component to be an object (a square scores 0.83
    against the circle of its area, a bar twice as long as wide 0.55 against the square)."""
    min_aspect: float = 0.6
    max_aspect: float = 1.67
    """Width / height a component's bounding box must lie within to be an object at all."""

    def detect(self, images: Sequence[np.ndarray]) -> list[ShapeDetections]:
        """Objects per image (uint8 (H, W, 3) each), largest first."""
        return [self.detect_one(image) for image in images]

    def detect_one(self, image: np.ndarray) -> ShapeDetections:
        """The shapes in one uint8 (H, W, 3) image."""
        labels = self.segment(image)
        height, width = labels.shape
        found = sorted(self._components(labels), key=lambda item: -item[0])  # stable: ties keep palette order
        detections = [Detection(shape, 1.0, box, ref=k) for k, (_, shape, _, box, _) in enumerate(found)]
        masks = np.stack([item[4] for item in found]) if found else np.zeros((0, height, width), dtype=bool)
        return ShapeDetections(detections, [item[2] for item in found], masks)

    def _components(self, labels: np.ndarray) -> list[tuple[int, str, str, Box, np.ndarray]]:
        """(area, shape, colour, box, full-size mask) of each component that passes the shape test."""
        height, width = labels.shape
        min_area = self.min_area * height * width / IMAGE_SIZE**2
        found = []
        for index, colour in enumerate(self.palette):
            components, _ = ndimage.label(labels == index, structure=_EIGHT_CONNECTED)
            for k, region in enumerate(ndimage.find_objects(components), start=1):
                mask = components[region] == k
                area = int(mask.sum())
                shape = self.classify(mask) if area >= min_area else None
                if shape is None:
                    continue
                ys, xs = region
                full = np.zeros((height, width), dtype=bool)
                full[region] = mask
                found.append(
                    (area, shape, colour, (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop)), full)
                )
        return found

    def segment(self, image: np.ndarray) -> np.ndarray:
        """(H, W) int: the index of each pixel's palette colour (order of `palette`), -1 for background."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image of shape {image.shape}: expected (H, W, 3)")
        colours = np.array(list(self.palette.values()), dtype=np.float32)
        pixels = image.astype(np.float32)
        distance = np.linalg.norm(pixels[:, :, None, :] - colours[None, None], axis=-1)
        nearest = distance.argmin(axis=-1)
        return np.where(distance.min(axis=-1) <= self.color_distance, nearest, -1)

    def classify(self, mask: np.ndarray) -> str | None:
        """The shape of a component cropped to its bounding box, or None if it is none of the three."""
        height, width = mask.shape
        if not self.min_aspect <= width / height <= self.max_aspect:
            return None
        best, best_iou = None, self.min_iou
        for shape, iou in shape_ious(mask).items():
            if iou >= best_iou:
                best, best_iou = shape, iou
        return best


def shape_ious(mask: np.ndarray) -> dict[str, float]:
    """IoU of a (cropped) component with each ideal shape of its area, placed on its centroid."""
    pad = max(3, int(np.ceil(0.25 * max(mask.shape))))  # room for a template wider than the component
    padded = np.pad(mask, pad)
    ys, xs = np.mgrid[0 : padded.shape[0], 0 : padded.shape[1]].astype(np.float64) + 0.5
    area = float(padded.sum())
    cx, cy = float(xs[padded].mean()), float(ys[padded].mean())
    sides = {"square": np.sqrt(area), "circle": 2 * np.sqrt(area / np.pi), "triangle": np.sqrt(2 * area)}
    ious = {}
    for shape in SHAPE_NAMES:
        side = sides[shape]
        # An upright triangle's centroid lies side/6 below its bounding-box centre.
        centre_y = cy - side / 6 if shape == "triangle" else cy
        template = shape_mask(shape, cx, centre_y, side, xs, ys)
        ious[shape] = float((template & padded).sum() / (template | padded).sum())
    return ious


def judge(
    image: np.ndarray,
    metadata: Mapping[str, Any],
    detector: ShapesDetector | None = None,
    thresholds: Thresholds | None = None,
) -> Verdict:
    """GenEval's verdict and dense score for one image of the shapes world, as the service computes them."""
    spec = parse_metadata(metadata, SHAPES)
    thresholds = thresholds or Thresholds()
    found = (detector or ShapesDetector()).detect_one(image)
    objects = select_objects(found.detections, spec.tag, thresholds)
    colours = {name: [found.colors[d.ref] for d in dets] for name, dets in colour_requests(objects, spec).items()}
    return evaluate(objects, spec, colours, thresholds)
