"""rewardflow_vision.ImagePreprocess: batched torch preprocessing vs transformers' CLIPImageProcessor (PIL)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from rewardflow_vision import OPENAI_CLIP_STD, ImagePreprocess, resolve_source
from rewardflow_vision.tiny import write_clip_image_processor
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

# One grey level after normalisation by the smallest std: the PIL reference rounds the resized image
# to uint8 and so do we, so values differ by at most one level where their kernels' sums round apart.
ONE_LEVEL = 1 / 255 / min(OPENAI_CLIP_STD) + 1e-5

SHAPES = [(50, 60), (33, 90), (200, 41), (32, 32), (20, 30), (64, 64), (97, 31)]


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A photo-like image (low-frequency gradients + mild noise): bicubic overshoot stays inside [0, 255]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for _ in range(3):
        fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        wave = np.sin(2 * np.pi * (fy * y / height + fx * x / width) + phase)
        channels.append(128 + 90 * wave + rng.normal(0, 4, (height, width)))
    return np.clip(np.stack(channels, -1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("processor")
    write_clip_image_processor(directory, shortest_edge=40, crop_size=32)
    return directory


def reference(processor_dir: Path, images: list[np.ndarray]) -> torch.Tensor:
    processor = CLIPImageProcessorPil.from_pretrained(processor_dir)
    return processor(images=images, return_tensors="pt")["pixel_values"]


def test_matches_clip_image_processor_within_one_grey_level(processor_dir: Path) -> None:
    images = [smooth_image(h, w, seed=i) for i, (h, w) in enumerate(SHAPES)]
    preprocess = ImagePreprocess.from_pretrained(resolve_source(str(processor_dir)))
    ours = preprocess(images)
    expected = reference(processor_dir, images)
    assert ours.shape == expected.shape == (len(SHAPES), 3, 32, 32)
    diff = (ours - expected).abs()
    assert diff.max().item() <= ONE_LEVEL
    assert diff.mean().item() < 0.05 * ONE_LEVEL, "almost every value should be identical"


def test_noise_images_agree_on_average(processor_dir: Path) -> None:
    # On pure noise PIL clips bicubic overshoot between its passes in an order that depends on the
    # shapes; a few pixels then differ by many levels, the mean stays a small fraction of one level.
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SHAPES]
    ours = ImagePreprocess.from_pretrained(resolve_source(str(processor_dir)))(images)
    diff = (ours - reference(processor_dir, images)).abs()
    assert diff.mean().item() < 0.1 * ONE_LEVEL


def test_images_at_the_crop_size_are_only_normalised(processor_dir: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    preprocess = ImagePreprocess(shortest_edge=32, crop_size=(32, 32))
    mean = torch.tensor(preprocess.mean).view(3, 1, 1)
    std = torch.tensor(preprocess.std).view(3, 1, 1)
    expected = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(preprocess([image])[0], expected, rtol=0, atol=1e-6)


def test_a_4d_array_a_list_and_read_only_views_give_the_same_batch() -> None:
    images = np.stack([smooth_image(48, 64, seed=i) for i in range(4)])
    preprocess = ImagePreprocess(shortest_edge=32, crop_size=(32, 32))
    read_only = images.copy()
    read_only.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "non-writable array" warning from torch
        from_array = preprocess(read_only)
    from_list = preprocess(list(images))
    flipped = preprocess(np.ascontiguousarray(images[:, ::-1])[:, ::-1])  # negative strides round trip
    torch.testing.assert_close(from_array, from_list, rtol=0, atol=0)
    torch.testing.assert_close(flipped, from_list, rtol=0, atol=0)
    assert from_array.dtype == torch.float32


def test_mixed_sizes_keep_their_order() -> None:
    small, large = smooth_image(40, 40, 1), smooth_image(80, 120, 2)
    preprocess = ImagePreprocess(shortest_edge=32, crop_size=(32, 32))
    batch = preprocess([small, large, small])
    torch.testing.assert_close(batch[0], preprocess([small])[0], rtol=0, atol=0)
    torch.testing.assert_close(batch[1], preprocess([large])[0], rtol=0, atol=0)
    torch.testing.assert_close(batch[2], batch[0], rtol=0, atol=0)


def test_output_dtype_is_the_models() -> None:
    out = ImagePreprocess(shortest_edge=16, crop_size=(16, 16))(smooth_image(20, 20, 0)[None], dtype=torch.bfloat16)
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"size": 224, "crop_size": 224}, {"shortest_edge": 224, "size": None, "crop_size": (224, 224)}),
        ({"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32}}, {"shortest_edge": 40}),
        ({"size": {"height": 384, "width": 384}, "do_center_crop": False}, {"size": (384, 384), "crop_size": None}),
        ({"do_normalize": False}, {"mean": None, "std": None}),
        ({"resample": 2}, {"resample": "bilinear"}),
    ],
)
def test_reads_preprocessor_configs(config: dict, expected: dict) -> None:
    preprocess = ImagePreprocess.from_config(config)
    for key, value in expected.items():
        assert getattr(preprocess, key) == value


def test_bad_inputs_name_the_problem() -> None:
    with pytest.raises(ValueError, match="'resample'=1"):
        ImagePreprocess.from_config({"resample": 1})
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 3\)"):
        ImagePreprocess()(np.zeros((1, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="no images"):
        ImagePreprocess()([])


def test_crop_rounding_matches_hf_floor_or_torchvision_round() -> None:
    # 300x433 -> shortest edge 224 -> 224x323: W - w = 99, HF offset 49, torchvision round(49.5) = 50.
    image = smooth_image(300, 433, seed=5)
    floor = ImagePreprocess(shortest_edge=224, crop_size=(224, 224), mean=None, std=None, rescale_factor=1.0)
    rounded = ImagePreprocess(
        shortest_edge=224, crop_size=(224, 224), mean=None, std=None, rescale_factor=1.0, crop_rounding="round"
    )
    resized = ImagePreprocess(shortest_edge=224, crop_size=None, mean=None, std=None, rescale_factor=1.0)([image])
    assert resized.shape[-2:] == (224, 323)
    torch.testing.assert_close(floor([image]), resized[..., 49 : 49 + 224], rtol=0, atol=0)
    torch.testing.assert_close(rounded([image]), resized[..., 50 : 50 + 224], rtol=0, atol=0)
    with pytest.raises(ValueError, match="crop_rounding='up'"):
        ImagePreprocess(crop_rounding="up")
