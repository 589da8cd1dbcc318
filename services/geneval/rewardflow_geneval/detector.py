"""COCO instance detection through transformers (Mask2Former by default): boxes, masks, confidences.

GenEval runs mmdetection's Mask2Former; this is the same model family through
`AutoModelForUniversalSegmentation` and the checkpoint's own image-processor settings, batched and
without PIL: images are resized in torch, the instance post-processing keeps what GenEval can use.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from rewardflow_vision import ImagePreprocess, load_pretrained, resolve_source
from transformers import AutoImageProcessor, AutoModelForUniversalSegmentation
from transformers.image_transforms import get_size_with_aspect_ratio

from rewardflow_geneval.metadata import OBJECT_NAMES
from rewardflow_geneval.rules import Detection

log = logging.getLogger(__name__)

# COCO label spellings that differ from GenEval's object_names.txt (HF/mmdet use COCO's short names).
LABEL_ALIASES = {
    "mouse": "computer mouse",
    "remote": "tv remote",
    "keyboard": "computer keyboard",
    "tvmonitor": "tv",
    "tv monitor": "tv",
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "hair dryer": "hair drier",
    "doughnut": "donut",
}
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def coco_label_names(id2label: dict[int, str]) -> list[str | None]:
    """Model label id -> GenEval class name (None for labels GenEval does not use, e.g. panoptic 'stuff').

    Names are matched after lower-casing and turning '_'/'-' into spaces, with COCO's short names
    aliased; a model with exactly 80 anonymous labels (LABEL_0...) is taken to be in COCO order.
    """
    ids = sorted(int(i) for i in id2label)
    wanted = set(OBJECT_NAMES)
    names: list[str | None] = [None] * (ids[-1] + 1 if ids else 0)
    for i in ids:
        raw = str(id2label[i]).strip().lower().replace("_", " ").replace("-", " ")
        name = LABEL_ALIASES.get(raw, raw)
        names[i] = name if name in wanted else None
    missing = wanted - set(names)
    if not missing:
        return names
    if ids == list(range(80)) and all(str(id2label[i]).upper().startswith("LABEL_") for i in ids):
        log.warning("detector labels are anonymous (LABEL_i); assuming the 80 COCO classes in COCO order")
        return list(OBJECT_NAMES)
    raise ValueError(
        f"REWARDFLOW_MODEL: the detector's labels lack {len(missing)} of GenEval's 80 COCO classes "
        f"(e.g. {', '.join(sorted(missing)[:5])}); expected a COCO instance-segmentation checkpoint"
    )


@dataclass(frozen=True)
class ResizeRule:
    """The checkpoint processor's resize: shortest/longest edge or fixed (height, width), then a size divisor."""

    shortest_edge: int | None
    longest_edge: int | None
    height: int | None
    width: int | None
    size_divisor: int

    def target(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) the processor would resize a (height, width) image to."""
        if self.shortest_edge:
            h, w = get_size_with_aspect_ratio((height, width), self.shortest_edge, self.longest_edge)
        elif self.height and self.width:
            h, w = self.height, self.width
        else:
            h, w = height, width
        if self.size_divisor > 0:
            h = int(math.ceil(h / self.size_divisor) * self.size_divisor)
            w = int(math.ceil(w / self.size_divisor) * self.size_divisor)
        return h, w


def _attr(processor: object, name: str, default: object) -> object:
    value = getattr(processor, name, None)
    return default if value is None else value


def _resize_rule(processor: object) -> tuple[ResizeRule, ImagePreprocess]:
    """The resize rule and the torch preprocessing (no crop) equivalent to `processor`'s settings."""
    size = _attr(processor, "size", {}) if _attr(processor, "do_resize", True) else {}
    get = size.get if isinstance(size, dict) else (lambda key: getattr(size, key, None))
    rule = ResizeRule(
        shortest_edge=get("shortest_edge"),
        longest_edge=get("longest_edge"),
        height=get("height"),
        width=get("width"),
        size_divisor=int(_attr(processor, "size_divisor", 0)),
    )
    normalize = bool(_attr(processor, "do_normalize", True))
    preprocess = ImagePreprocess(
        shortest_edge=None,
        size=None,
        crop_size=None,
        resample=_RESAMPLE.get(int(_attr(processor, "resample", 2)), "bilinear"),
        rescale_factor=float(_attr(processor, "rescale_factor", 1 / 255))
        if _attr(processor, "do_rescale", True)
        else 1.0,
        mean=tuple(_attr(processor, "image_mean", (0.485, 0.456, 0.406))) if normalize else None,
        std=tuple(_attr(processor, "image_std", (0.229, 0.224, 0.225))) if normalize else None,
    )
    return rule, preprocess


@dataclass
class ImageDetections:
    """One image's candidate objects (Detection.ref indexes `masks`) and their masks (K, H, W) bool, on CPU."""

    detections: list[Detection]
    masks: torch.Tensor


class InstanceDetector:
    """A COCO instance-segmentation model (Mask2Former, MaskFormer) with batched torch pre/post-processing."""

    def __init__(
        self,
        model: torch.nn.Module,
        label_names: list[str | None],
        resize: ResizeRule,
        preprocess: ImagePreprocess,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        self.model = model
        self.label_names = label_names
        self.resize = resize
        self.preprocess = preprocess
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(
        cls, model_id: str, *, device: torch.device, dtype: torch.dtype, revision: str | None = None
    ) -> InstanceDetector:
        """Model and processor settings from a Hugging Face id or a local directory (offline flags respected)."""
        source = resolve_source(model_id, revision, field="REWARDFLOW_MODEL")
        model = load_pretrained(AutoModelForUniversalSegmentation, source, device=device, dtype=dtype)
        processor = AutoImageProcessor.from_pretrained(source.name_or_path, **source.from_pretrained_kwargs())
        rule, preprocess = _resize_rule(processor)
        return cls(model, coco_label_names(model.config.id2label), rule, preprocess, device, dtype)

    def pixel_batch(self, images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """images -> pixel_values (N, 3, Hp, Wp), pixel_mask (N, Hp, Wp) and each image's resized (h, w)."""
        sizes = [self.resize.target(*image.shape[:2]) for image in images]
        pad_h, pad_w = max(h for h, _ in sizes), max(w for _, w in sizes)
        pixels = torch.zeros((len(images), 3, pad_h, pad_w), dtype=self.dtype, device=self.device)
        mask = torch.zeros((len(images), pad_h, pad_w), dtype=torch.long, device=self.device)
        by_shape: dict[tuple[tuple[int, ...], tuple[int, int]], list[int]] = {}
        for i, image in enumerate(images):
            by_shape.setdefault((image.shape, sizes[i]), []).append(i)
        for (_, (h, w)), indices in by_shape.items():
            step = dataclasses.replace(self.preprocess, size=(h, w))
            stack = np.stack([images[i] for i in indices]) if len(indices) > 1 else np.asarray(images[indices[0]])[None]
            index = torch.as_tensor(indices, device=self.device)
            pixels[index, :, :h, :w] = step(stack, device=self.device, dtype=self.dtype)
            mask[index, :h, :w] = 1
        return pixels, mask, sizes

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray], min_score: float) -> list[ImageDetections]:
        """Objects with confidence > `min_score` per image (uint8 (H, W, 3) each), most confident first."""
        pixels, pixel_mask, sizes = self.pixel_batch(images)
        out = self.model(pixel_values=pixels, pixel_mask=pixel_mask)
        class_logits = out.class_queries_logits.float()
        mask_logits = out.masks_queries_logits.float()
        return [
            self._postprocess(class_logits[i], mask_logits[i], pixels.shape[-2:], sizes[i], image.shape[:2], min_score)
            for i, image in enumerate(images)
        ]

    # Adapted from mmdet MaskFormerFusionHead.instance_postprocess and transformers'
    # post_process_instance_segmentation: same scores (class prob x mean mask prob over the binary mask,
    # top-k over queries x classes) and mask-derived boxes; masks are only upsampled for candidates that
    # can still pass `min_score` (a score is at most its class probability).
    def _postprocess(
        self,
        class_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        padded: torch.Size,
        resized: tuple[int, int],
        original: tuple[int, int],
        min_score: float,
    ) -> ImageDetections:
        """class_logits (Q, C+1), mask_logits (Q, h, w) -> detections at the original image size."""
        num_queries, num_classes = class_logits.shape[0], class_logits.shape[1] - 1
        probs = class_logits.softmax(-1)[:, :-1].flatten()
        top_probs, top_index = probs.topk(min(num_queries, probs.numel()))
        keep = top_probs > min_score
        top_probs, top_index = top_probs[keep], top_index[keep]
        labels = (top_index % num_classes).tolist()
        queries = top_index // num_classes
        height, width = original
        if not labels:
            return ImageDetections([], torch.zeros((0, height, width), dtype=torch.bool))
        masks = F.interpolate(mask_logits[queries][None], size=tuple(padded), mode="bilinear", align_corners=False)
        masks = masks[..., : resized[0], : resized[1]]
        masks = F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)[0]
        binary = masks > 0
        area = binary.flatten(1).sum(1)
        mask_scores = (masks.sigmoid() * binary).flatten(1).sum(1) / (area + 1e-6)
        scores = (top_probs * mask_scores).tolist()
        boxes = _mask_boxes(binary).tolist()
        detections, kept = [], []
        for k, (label, score) in enumerate(zip(labels, scores, strict=True)):
            name = self.label_names[label] if label < len(self.label_names) else None
            if name is None or score <= min_score:
                continue
            detections.append(Detection(name, float(score), tuple(boxes[k]), ref=len(kept)))
            kept.append(k)
        detections.sort(key=lambda d: -d.score)
        return ImageDetections(detections, binary[kept].cpu())


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(K, H, W) bool -> (K, 4) boxes (x1, y1, x2 + 1, y2 + 1) around each mask; zeros if empty (mmdet mask2bbox)."""
    rows = masks.any(dim=2)
    cols = masks.any(dim=1)
    height, width = masks.shape[1:]
    boxes = torch.zeros((masks.shape[0], 4), dtype=torch.float32, device=masks.device)
    ys = torch.arange(height, device=masks.device)
    xs = torch.arange(width, device=masks.device)
    nonempty = rows.any(dim=1)
    big = torch.iinfo(torch.long).max
    boxes[:, 0] = torch.where(cols, xs, big).min(dim=1).values.float()
    boxes[:, 1] = torch.where(rows, ys, big).min(dim=1).values.float()
    boxes[:, 2] = torch.where(cols, xs, -1).max(dim=1).values.float() + 1
    boxes[:, 3] = torch.where(rows, ys, -1).max(dim=1).values.float() + 1
    boxes[~nonempty] = 0
    return boxes
