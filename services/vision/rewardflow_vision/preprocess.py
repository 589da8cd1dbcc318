"""Batched uint8 image preprocessing in torch, with CLIPImageProcessor's semantics and no PIL round trip.

Resize (shortest side to `shortest_edge`, or to a fixed (H, W)), center crop, rescale by 1/255 and
normalise with the processor's mean/std, for a whole batch at once on the model's device.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from rewardflow_vision.loading import ModelSource

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# PIL.Image.Resampling values as stored in preprocessor_config.json ("resample": 3 is bicubic).
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}
PREPROCESSOR_CONFIG = "preprocessor_config.json"


@dataclass(frozen=True)
class ImagePreprocess:
    """How uint8 (H, W, 3) images become a normalised float (N, 3, h, w) batch; CLIPImageProcessor semantics.

    shortest_edge: resize so the shorter side has this length, the longer `int(edge * long / short)`
    (HF's rounding); size: or resize to exactly (H, W); neither: no resize. crop_size: center crop
    (zero padding where the image is smaller, as HF does). round_after_resize: HF's PIL backend resizes
    the uint8 image, rounding and clipping after each pass; `resize_like_pil` does the same and stays within one
    grey level of it (False: one float resize, no rounding).
    """

    shortest_edge: int | None = 224
    size: tuple[int, int] | None = None
    crop_size: tuple[int, int] | None = (224, 224)
    resample: str = "bicubic"
    rescale_factor: float = 1 / 255
    mean: tuple[float, ...] | None = OPENAI_CLIP_MEAN
    std: tuple[float, ...] | None = OPENAI_CLIP_STD
    round_after_resize: bool = True
    crop_rounding: str = "floor"
    """'floor': crop offset (H - h) // 2 (HF processors); 'round': round((H - h) / 2), half to even (torchvision)."""

    def __post_init__(self) -> None:
        if self.shortest_edge is not None and self.size is not None:
            raise ValueError(
                f"ImagePreprocess: give shortest_edge or size, not both (got {self.shortest_edge}, {self.size})"
            )
        if self.resample not in _PIL_RESAMPLE.values():
            raise ValueError(
                f"ImagePreprocess.resample={self.resample!r}; expected one of {sorted(_PIL_RESAMPLE.values())}"
            )
        if self.crop_rounding not in ("floor", "round"):
            raise ValueError(f"ImagePreprocess.crop_rounding={self.crop_rounding!r}; expected 'floor' or 'round'")
        if (self.mean is None) != (self.std is None):
            raise ValueError("ImagePreprocess: mean and std must both be set (normalise) or both be None")

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ImagePreprocess:
        """From a preprocessor_config.json dict (CLIPImageProcessor / BLIP-style keys)."""
        shortest_edge, size = None, None
        if config.get("do_resize", True):
            raw = config.get("size", 224)
            if isinstance(raw, int):
                # An int size means the shortest edge for CLIP-style processors (default_to_square=False).
                if config.get("default_to_square", False):
                    size = (raw, raw)
                else:
                    shortest_edge = raw
            elif "shortest_edge" in raw:
                shortest_edge = int(raw["shortest_edge"])
            elif "height" in raw and "width" in raw:
                size = (int(raw["height"]), int(raw["width"]))
            else:
                raise ValueError(
                    f"preprocessor config 'size'={raw!r}; expected an int, {{'shortest_edge'}} or {{'height', 'width'}}"
                )
        crop_size = None
        if config.get("do_center_crop", True):
            raw_crop = config.get("crop_size", 224)
            crop_size = (
                (raw_crop, raw_crop) if isinstance(raw_crop, int) else (int(raw_crop["height"]), int(raw_crop["width"]))
            )
        resample_code = config.get("resample", 3)
        if resample_code not in _PIL_RESAMPLE:
            raise ValueError(
                f"preprocessor config 'resample'={resample_code!r}; expected one of {sorted(_PIL_RESAMPLE)}"
            )
        normalize = config.get("do_normalize", True)
        return cls(
            shortest_edge=shortest_edge,
            size=size,
            crop_size=crop_size,
            resample=_PIL_RESAMPLE[resample_code],
            rescale_factor=float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else 1.0,
            mean=tuple(config.get("image_mean", OPENAI_CLIP_MEAN)) if normalize else None,
            std=tuple(config.get("image_std", OPENAI_CLIP_STD)) if normalize else None,
        )

    @classmethod
    def from_pretrained(cls, source: ModelSource) -> ImagePreprocess:
        """Read preprocessor_config.json from a local directory or the Hugging Face cache/hub."""
        if source.local:
            path = Path(source.name_or_path) / PREPROCESSOR_CONFIG
            if not path.is_file():
                raise FileNotFoundError(f"{source.field}={source.name_or_path!r} has no {PREPROCESSOR_CONFIG}")
        else:
            from huggingface_hub import hf_hub_download

            path = Path(
                hf_hub_download(
                    source.name_or_path,
                    PREPROCESSOR_CONFIG,
                    revision=source.revision,
                    local_files_only=source.local_files_only,
                )
            )
        return cls.from_config(json.loads(path.read_text()))

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(h, w) of every preprocessed image, when it does not depend on the input."""
        return self.crop_size or self.size

    def __call__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """images: (N, H, W, 3) uint8 array, or N arrays (H_i, W_i, 3) -> (N, 3, h, w) `dtype` on `device`.

        Images of equal shape are resized together in one interpolate call; the arithmetic runs in
        float32 on `device` and only the result is cast to `dtype`.
        """
        groups = _group_by_shape(images)
        n = sum(len(indices) for indices, _ in groups)
        if n == 0:
            raise ValueError("ImagePreprocess: no images to preprocess")
        out: torch.Tensor | None = None
        for indices, stack in groups:
            pixels = self._process_stack(_as_tensor(stack).to(device))
            if out is None:
                out = torch.empty((n, *pixels.shape[1:]), dtype=dtype, device=pixels.device)
            elif pixels.shape[1:] != out.shape[1:]:
                raise ValueError(
                    f"ImagePreprocess: images of different sizes give different outputs ({tuple(pixels.shape[1:])} "
                    f"vs {tuple(out.shape[1:])}); set crop_size or size so that every output has one shape"
                )
            out[torch.as_tensor(indices, device=pixels.device)] = pixels.to(dtype)
        assert out is not None
        return out

    def _process_stack(self, images: torch.Tensor) -> torch.Tensor:
        """images: uint8 (n, H, W, 3) -> float32 (n, 3, h, w), normalised."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(
                f"ImagePreprocess: images must be uint8 (H, W, 3); got {images.dtype} {tuple(images.shape[1:])}"
            )
        x = images.permute(0, 3, 1, 2)
        target = self._resize_target(x.shape[-2], x.shape[-1])
        if target is not None and target != tuple(x.shape[-2:]):
            x = (
                resize_like_pil(x, target, self.resample)
                if self.round_after_resize
                else _interpolate(x.float(), target, self.resample)
            )
        x = x.to(torch.float32)
        if self.crop_size is not None:
            x = center_crop(x, self.crop_size, self.crop_rounding)
        x = x * self.rescale_factor
        if self.mean is not None and self.std is not None:
            mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def _resize_target(self, height: int, width: int) -> tuple[int, int] | None:
        if self.size is not None:
            return self.size
        if self.shortest_edge is None:
            return None
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(self.shortest_edge * long / short)  # HF's get_resize_output_image_size truncates
        return (new_long, self.shortest_edge) if width <= height else (self.shortest_edge, new_long)


def center_crop(images: torch.Tensor, crop_size: tuple[int, int], rounding: str = "floor") -> torch.Tensor:
    """images: (N, C, H, W) -> (N, C, h, w); zero padding where smaller (as HF).

    Offsets: (H - h) // 2 with rounding='floor' (HF), round((H - h) / 2) with 'round' (torchvision's
    CenterCrop; Python's half-to-even round); they differ by one pixel when H - h = 3 (mod 4).
    """
    crop_h, crop_w = crop_size
    height, width = images.shape[-2:]
    if height < crop_h or width < crop_w:
        pad_top = math.ceil((crop_h - height) / 2) if height < crop_h else 0
        pad_left = math.ceil((crop_w - width) / 2) if width < crop_w else 0
        pad_bottom = max(crop_h - height - pad_top, 0)
        pad_right = max(crop_w - width - pad_left, 0)
        images = F.pad(images, (pad_left, pad_right, pad_top, pad_bottom))
        height, width = images.shape[-2:]
    if rounding == "round":
        top, left = round((height - crop_h) / 2), round((width - crop_w) / 2)
    else:
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return images[..., top : top + crop_h, left : left + crop_w]


def resize_like_pil(images: torch.Tensor, size: tuple[int, int], resample: str = "bicubic") -> torch.Tensor:
    """uint8 (N, C, H, W) -> uint8 (N, C, h, w) as PIL's Image.resize does it (within one grey level).

    PIL resizes horizontally, rounds and clips to uint8, then vertically. torch's uint8 CPU kernel does
    the same; elsewhere two float passes with the rounding in between do (one float pass differs by up
    to ~15 levels on noisy images, where bicubic overshoot is clipped between the passes in PIL).
    """
    if images.device.type == "cpu" and resample != "nearest":
        return F.interpolate(images.contiguous(), size=size, mode=resample, antialias=True, align_corners=False)
    x = images.to(torch.float32)
    x = _interpolate(x, (x.shape[-2], size[1]), resample).round_().clamp_(0, 255)
    x = _interpolate(x, size, resample).round_().clamp_(0, 255)
    return x.to(torch.uint8)


def _interpolate(x: torch.Tensor, size: tuple[int, int], resample: str) -> torch.Tensor:
    if resample == "nearest":
        return F.interpolate(x, size=size, mode="nearest-exact")
    # antialias=True uses PIL's kernels (bicubic a = -0.5, support widened when shrinking), unlike
    # the default bicubic (a = -0.75, no antialias) that aliases badly on 512 -> 224.
    return F.interpolate(x, size=size, mode=resample, antialias=True, align_corners=False)


def _group_by_shape(images: np.ndarray | Sequence[np.ndarray]) -> list[tuple[list[int], np.ndarray]]:
    """Indices and (n, H, W, 3) stacks of equal-shape images; one group (no copy) for a 4-D array."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [(list(range(images.shape[0])), images)]
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, image in enumerate(images):
        by_shape.setdefault(tuple(np.shape(image)), []).append(i)
    groups = []
    for indices in by_shape.values():
        if len(indices) == 1:
            stack = np.asarray(images[indices[0]])[None]
        else:
            stack = np.stack([images[i] for i in indices])
        groups.append((indices, stack))
    return groups


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of `array`; read-only arrays (the kit's zero-copy views) are viewed too."""
    if any(stride < 0 for stride in array.strides):  # torch cannot view negative strides (flipped arrays)
        array = np.ascontiguousarray(array)
    with warnings.catch_warnings():
        # torch warns that a read-only array gives a tensor that must not be written to; the caller
        # only reads it (it is converted to float, a new tensor, right away).
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)
