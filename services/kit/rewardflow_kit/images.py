"""Decoded pixels on a budget: sizes read from the encoded files' headers before anything is decoded, decoding
one model call's worth at a time, and downscaling while decoding to a scorer's declared working resolution.

A 16 KB grayscale PNG can declare 4096 x 4096 pixels, 48 MiB once decoded to RGB: the budgets (`max_image_pixels`,
`max_request_pixels`, `max_batch_pixels`) are checked against what the headers declare, so such a request is
refused (413) before any of it is decoded.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage
from rewardflow_proto import ContractError, EncodedImage, ScoreRequest

from rewardflow_kit.scorer import ItemFailure

# Modes whose pixels may be averaged before the conversion to RGB with the same result (channel-wise and linear).
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA"})


@dataclass(frozen=True)
class PixelLimits:
    """Budgets of decoded pixels (H x W): one image, one request's images together, one model call's images."""

    per_image: int
    per_request: int
    per_batch: int


@dataclass
class Admitted:
    """A request that passed every whole-request check, with the pixels its images declare."""

    request: ScoreRequest
    pixels: int


def _open(image: EncodedImage) -> PILImage.Image:
    # Lazy: Pillow reads only the header here; pixels are decoded by load() or convert().
    return PILImage.open(io.BytesIO(image.data), formats=("PNG", "JPEG"))


def declared_pixels(image: np.ndarray | EncodedImage, field: str, max_pixels: int) -> int:
    """H x W of a raw image, or as an encoded file's header declares it (0 if it has no readable header: that
    image fails alone when decoded); raises ContractError("too_large") over `max_pixels`."""
    if isinstance(image, np.ndarray):
        return int(image.shape[0] * image.shape[1])
    try:
        with _open(image) as pil:
            width, height = pil.size
    except PILImage.DecompressionBombError as exc:  # Pillow refuses to even open it: far over any budget
        message = f"{field}: the {image.format} file is refused by Pillow ({exc}); max_image_pixels is {max_pixels}"
        raise ContractError("too_large", message, field) from None
    except Exception:  # Pillow raises many unrelated types on corrupt headers
        return 0
    if width * height > max_pixels:
        message = (
            f"{field}: a {image.format} image of {height}x{width} pixels (HxW) exceeds max_image_pixels of {max_pixels}"
        )
        raise ContractError("too_large", message, field)
    return width * height


def request_pixels(request: ScoreRequest, limits: PixelLimits) -> int:
    """The pixels all images of `request` declare; raises ContractError("too_large") over a budget, naming it."""
    images = request.images
    if isinstance(images, np.ndarray):  # one raw batch (N, H, W, 3); the codec checked each image's size
        total = int(images.shape[0] * images.shape[1] * images.shape[2])
    else:
        total = sum(declared_pixels(image, f"images[{i}]", limits.per_image) for i, image in enumerate(images))
    if total > limits.per_request:
        raise ContractError(
            "too_large",
            f"images: the request's {len(request)} images declare {total} pixels, over this service's "
            f"max_request_pixels of {limits.per_request} (3 bytes each once decoded); send fewer or smaller images",
            "images",
        )
    return total


def pixel_chunks(pixels: list[int], budget: int) -> list[tuple[int, int]]:
    """[start, end) runs of consecutive requests whose pixels add up to at most `budget` (a larger one alone)."""
    runs: list[tuple[int, int]] = []
    start, held = 0, 0
    for i, count in enumerate(pixels):
        if i > start and held + count > budget:
            runs.append((start, i))
            start, held = i, 0
        held += count
    if pixels:
        runs.append((start, len(pixels)))
    return runs


def _downscaled_rgb(pil: PILImage.Image, working_size: int | None) -> PILImage.Image:
    """The decoded image as RGB, its shorter side reduced towards `working_size` (never below it)."""
    if working_size is not None and min(pil.size) // working_size >= 2:
        if pil.format == "JPEG":
            width, height = pil.size
            shorter = min(width, height)
            # The JPEG decoder scales by 1/2, 1/4 or 1/8 while decoding, to no less than the size asked for.
            pil.draft("RGB", (-(-width * working_size // shorter), -(-height * working_size // shorter)))
        pil.load()
        factor = min(pil.size) // working_size
        if factor >= 2:
            if pil.mode not in _REDUCIBLE_MODES:
                pil = pil.convert("RGB")
            pil = pil.reduce(factor)
    return pil.convert("RGB")


def decode_image(image: np.ndarray | EncodedImage, max_pixels: int, working_size: int | None = None) -> np.ndarray:
    """A request image as uint8 (H, W, 3), an encoded one downscaled towards `working_size` if given;
    raises ItemFailure("bad_image") for a corrupt file or one over `max_pixels`."""
    if isinstance(image, np.ndarray):
        return image
    try:
        with _open(image) as pil:
            width, height = pil.size
            if width * height > max_pixels:
                raise ItemFailure(
                    "bad_image", f"{image.format} image of {width}x{height} pixels exceeds the limit of {max_pixels}"
                )
            rgb = _downscaled_rgb(pil, working_size)
    except ItemFailure:
        raise
    except Exception as exc:  # Pillow raises many unrelated types on corrupt files
        raise ItemFailure("bad_image", f"cannot decode the {image.format} image: {type(exc).__name__}: {exc}") from None
    return np.asarray(rgb)


def working_size_of(scorer: object) -> int | None:
    """The scorer's optional `working_size` (the shorter side its model resizes images to), checked."""
    size = getattr(scorer, "working_size", None)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"scorer {getattr(scorer, 'name', scorer)!r}: working_size must be a positive int or None")
    return size
