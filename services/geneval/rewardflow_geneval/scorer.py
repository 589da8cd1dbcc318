"""The GenEval reward: detect objects, classify the colours GenEval asks about, apply GenEval's rules.

Scores per image:
- `score` (primary): the dense reward Flow-GRPO trains on, computed as its GenEval reward server
  (yifan123/reward-server, reward_server/gen_eval.py `evaluate_reward`) computes the `scores` that
  flow_grpo/rewards.py `multi_score` returns: the plain mean of per-clause count, colour and position
  credits, quirks included (rules.dense_credits; docs/geneval.md). Range [min(0, 2 - max_objects), 1]
  ([-14, 1] with GenEval's 16 objects per class): "a dog" with 3 dogs found gives -1.
- `strict`: 1.0 if GenEval's verdict is "correct" (every clause holds), else 0.0: what the GenEval
  benchmark counts. Ask for it by name: reward `geneval_strict`.
Details per image: tag, detected objects (class, confidence, box, colour), the checks, the dense
credits and, in words, why each failed check failed.

REWARDFLOW_GENEVAL_DETECTOR=shapes swaps both models for shapes_detector (the procedural shapes world's
exact detector; no model to load, colours from the segments) and validates metadata against the
SHAPES world's vocabulary; the rules and both scores are unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field
from rewardflow_kit import Batch, InvalidRequest, ItemFailure, ItemScore
from rewardflow_kit.hub import RequiredModel, is_hub_id
from rewardflow_vision import ClipEmbedder, ModelSettings, parse_device, parse_dtype
from rewardflow_vision.hub import clip_models

from rewardflow_geneval.colors import ColourClassifier, masked_crop
from rewardflow_geneval.detector import InstanceDetector
from rewardflow_geneval.metadata import COCO, SHAPES, MetadataError, Spec, parse_metadata
from rewardflow_geneval.rules import Thresholds, colour_requests, dense_score_range, evaluate, select_objects
from rewardflow_geneval.shapes import render
from rewardflow_geneval.shapes_detector import ShapesDetector

DEFAULT_DETECTOR = "facebook/mask2former-swin-small-coco-instance"
DEFAULT_CLIP = "openai/clip-vit-large-patch14"
SHAPES_MODEL_ID = "shapes-detector"
"""What /v1/info and every reply name as the model when REWARDFLOW_GENEVAL_DETECTOR=shapes."""


class GenevalSettings(ModelSettings):
    """GenEval's models and thresholds (env vars REWARDFLOW_*); the detector is REWARDFLOW_MODEL."""

    detector: Literal["mask2former", "shapes"] = Field(
        "mask2former",
        validation_alias="REWARDFLOW_GENEVAL_DETECTOR",
        description="mask2former (REWARDFLOW_MODEL + CLIP colours, COCO classes) or shapes (the shapes world's "
        "exact detector: no model, metadata in the shapes vocabulary).",
    )
    clip_model: str = Field(DEFAULT_CLIP, description="CLIP id or local path for colours (GenEval: ViT-L/14, OpenAI).")
    confidence_threshold: float = Field(0.3, ge=0, le=1, description="A detection counts above this confidence.")
    counting_threshold: float = Field(0.9, ge=0, le=1, description="The same for images tagged 'counting'.")
    max_objects: int = Field(16, ge=1, description="Most detections kept per class, most confident first.")
    max_overlap: float = Field(
        1.0, gt=0, le=1, description="Same-class boxes with IoU >= this are suppressed (1: none)."
    )
    position_threshold: float = Field(
        0.1, ge=0, description="Share of both boxes' sizes a position offset must exceed."
    )

    def thresholds(self) -> Thresholds:
        return Thresholds(
            confidence=self.confidence_threshold,
            counting_confidence=self.counting_threshold,
            max_objects=self.max_objects,
            max_overlap=self.max_overlap,
            position=self.position_threshold,
        )


class GenevalScorer:
    """GenEval without mmdetection: Mask2Former (transformers) + CLIP colours, or the shapes world's exact
    detector, + GenEval's rules."""

    name = "geneval"
    version = "1.0.0"
    model_id = DEFAULT_DETECTOR
    device = "cpu"
    score_keys = ("score", "strict")
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "score": dense_score_range(Thresholds().max_objects),
        "strict": (0.0, 1.0),
    }
    """`score`'s floor follows REWARDFLOW_MAX_OBJECTS: load() sets it from the settings."""
    max_batch_size = 32

    def __init__(self) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # REWARDFLOW_DEVICE overrides it
        self.thresholds = Thresholds()
        self.detector: InstanceDetector | None = None
        self.colours: ColourClassifier | None = None
        self.shapes: ShapesDetector | None = None
        self.world = COCO
        self.clip_model_id = DEFAULT_CLIP

    def load(self) -> None:
        """Load the detector (REWARDFLOW_MODEL) and CLIP (REWARDFLOW_CLIP_MODEL), then build one colour classifier;
        with REWARDFLOW_GENEVAL_DETECTOR=shapes, load nothing and use the shapes world's detector."""
        settings = GenevalSettings()
        self.thresholds = settings.thresholds()
        self.score_range = {**self.score_range, "score": dense_score_range(self.thresholds.max_objects)}
        if settings.detector == "shapes":
            self.shapes, self.world = ShapesDetector(), SHAPES
            self.model_id, self.device = SHAPES_MODEL_ID, "cpu"  # numpy on the CPU, whatever REWARDFLOW_DEVICE says
            return
        device = parse_device(self.device)
        dtype = parse_dtype(settings.dtype, device)
        self.clip_model_id = settings.clip_model
        self.detector = InstanceDetector.load(self.model_id, device=device, dtype=dtype, revision=settings.revision)
        embedder = ClipEmbedder.load(settings.clip_model, device=str(device), dtype=settings.dtype)
        self.colours = ColourClassifier(embedder)
        # Warm CLIP's text and image towers here: the kit's warm-up batch may detect nothing to colour.
        self.colours.classify([np.full((8, 8, 3), 128, dtype=np.uint8)], ["car"])

    def required_models(self) -> list[RequiredModel]:
        """Mask2Former (REWARDFLOW_MODEL, with its image processor) and CLIP (REWARDFLOW_CLIP_MODEL); the shapes
        detector needs nothing."""
        settings = GenevalSettings()
        if settings.detector == "shapes":
            return []
        files = ("config.json", "model.safetensors|pytorch_model.bin", "preprocessor_config.json")
        detector = [RequiredModel(self.model_id, files, revision=settings.revision)] if is_hub_id(self.model_id) else []
        return detector + clip_models(settings.clip_model, setting="REWARDFLOW_CLIP_MODEL")

    def warmup_batch(self) -> Batch:
        """Two 512x512 images asking for a colour and a position: runs the detector at serving size (shapes: 64x64)."""
        rng = np.random.default_rng(0)
        if self.shapes is not None:
            return self._shapes_warmup_batch(rng)
        images = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(2)]
        metadata = [
            {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "red"}]},
            {
                "tag": "position",
                "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1, "position": ["left of", 0]}],
            },
        ]
        return Batch(
            images=images, prompts=["a photo of a red car", "a photo of a dog left of a cat"], metadata=metadata
        )

    def _shapes_warmup_batch(self, rng: np.random.Generator) -> Batch:
        """Two renders of the shapes world (a colour and a position) at its own size."""
        metadata = [
            {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "red"}]},
            {
                "tag": "position",
                "include": [
                    {"class": "square", "count": 1},
                    {"class": "triangle", "count": 1, "position": ["left of", 0]},
                ],
            },
        ]
        images = [render(entry, rng) for entry in metadata]
        prompts = ["a photo of a red circle", "a photo of a triangle left of a square"]
        return Batch(images=images, prompts=prompts, metadata=metadata)

    def validate(self, prompts: list[str], metadata: list[dict[str, Any]]) -> None:
        """Refuse the request (422) if any image lacks GenEval metadata or has a malformed entry."""
        for i, entry in enumerate(metadata):
            if not entry:
                raise InvalidRequest(
                    f"metadata[{i}]", f"image {i}: no GenEval metadata; expected {{tag, include[, exclude]}}"
                )
            try:
                parse_metadata(entry, self.world)
            except MetadataError as exc:
                raise InvalidRequest(f"metadata[{i}].{exc.field}", f"image {i}: {exc.message}") from None

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        if self.shapes is None and (self.detector is None or self.colours is None):
            raise RuntimeError("GenevalScorer.score called before load()")
        results: list[ItemScore | ItemFailure | None] = [None] * len(batch)
        specs: dict[int, Spec] = {}
        for i in range(len(batch)):
            entry = batch.metadata[i] if i < len(batch.metadata) else {}
            try:
                specs[i] = parse_metadata(entry or {}, self.world)
            except MetadataError as exc:
                results[i] = ItemFailure("bad_metadata", f"image {i}: metadata.{exc.field}: {exc.message}")
        order = sorted(specs)
        images = [batch.images[i] for i in order]
        if self.shapes is not None:
            found: list = self.shapes.detect(images)
        else:
            found = self.detector.detect(images, min_score=self.thresholds.lowest)
        objects = {i: select_objects(found[k].detections, specs[i].tag, self.thresholds) for k, i in enumerate(order)}
        if self.shapes is not None:
            colours = self._segment_colours(order, found, objects, specs)
        else:
            colours = self._colours(batch, order, found, objects, specs)
        for i in order:
            verdict = evaluate(objects[i], specs[i], colours[i], self.thresholds)
            results[i] = ItemScore({"score": verdict.score, "strict": float(verdict.strict)}, details=verdict.details())
        return [r for r in results if r is not None]

    def _colours(
        self, batch: Batch, order: list[int], found: list, objects: dict, specs: dict
    ) -> dict[int, dict[str, list[str]]]:
        """Per image, class -> colours of the objects the rules ask about, from one CLIP pass over all crops."""
        crops, names, owners = [], [], []
        for k, i in enumerate(order):
            masks = found[k].masks.numpy()
            for name, dets in colour_requests(objects[i], specs[i]).items():
                for det in dets:
                    crops.append(masked_crop(batch.images[i], masks[det.ref], det.box))
                    names.append(name)
                    owners.append((i, name))
        labels = self.colours.classify(crops, names) if crops else []
        colours: dict[int, dict[str, list[str]]] = {i: {} for i in order}
        for (i, name), colour in zip(owners, labels, strict=True):
            colours[i].setdefault(name, []).append(colour)
        return colours

    @staticmethod
    def _segment_colours(order: list[int], found: list, objects: dict, specs: dict) -> dict[int, dict[str, list[str]]]:
        """Per image, class -> the palette colours of the segments the rules ask about (the shapes detector's)."""
        colours: dict[int, dict[str, list[str]]] = {}
        for k, i in enumerate(order):
            requests = colour_requests(objects[i], specs[i])
            colours[i] = {name: [found[k].colors[det.ref] for det in dets] for name, dets in requests.items()}
        return colours
