"""Tiny CLIP checkpoints for the CLIP-based service tests, independent reference computations, and constructed weights.

The references use transformers' own CLIPProcessor (PIL) and CLIPModel, never rewardflow_vision, so a
service's preprocessing, tokenisation and formula are all checked against another implementation.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from rewardflow_vision.tiny import write_tiny_clip
from transformers import CLIPModel, CLIPProcessor

SHORTEST_EDGE = 40
CROP = 32
SERVICE_ENV = {"HF_HUB_OFFLINE": "1", "REWARDFLOW_MAX_QUEUE_DELAY_MS": "0"}


def write_clip_dir(directory: Path, seed: int = 0) -> Path:
    """A tiny random CLIP (projection 16-d, logit scale 100) whose processor resizes to 40 and crops 32."""
    return write_tiny_clip(directory, seed=seed, image_size=CROP, shortest_edge=SHORTEST_EDGE)


def service_env(model_dir: Path, **extra: str) -> dict[str, str]:
    """Env for a CLIP service process pointed at `model_dir` for the model and the processor."""
    return {**SERVICE_ENV, "REWARDFLOW_MODEL": str(model_dir), "REWARDFLOW_PROCESSOR": str(model_dir), **extra}


def photo_like(n: int, height: int, width: int, seed: int) -> np.ndarray:
    """(n, H, W, 3) uint8 smooth colour waves plus mild noise: images a resize treats like photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    images = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        for c in range(3):
            fy, fx, phase = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
            wave = np.sin(2 * np.pi * (fy * y / height + fx * x / width) + phase)
            images[i, :, :, c] = np.clip(128 + 100 * wave + rng.normal(0, 6, (height, width)), 0, 255)
    return images


def _features(output: torch.Tensor | object) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is projected (5)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output  # type: ignore[attr-defined]


@torch.no_grad()
def reference_logits(model_dir: Path, images: np.ndarray | list[np.ndarray], prompts: list[str]) -> np.ndarray:
    """CLIPModel.forward(...).logits_per_image.diagonal(): logit_scale * cos per (image, prompt) pair, (N,)."""
    model = CLIPModel.from_pretrained(model_dir).eval()
    processor = CLIPProcessor.from_pretrained(model_dir)
    inputs = processor(
        text=prompts, images=list(images), padding=True, truncation=True, max_length=77, return_tensors="pt"
    )
    return model(**inputs).logits_per_image.diagonal().double().numpy()


@torch.no_grad()
def reference_image_embeddings(model_dir: Path, images: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """get_image_features on CLIPProcessor pixels, L2-normalised: (N, D) float32."""
    model = CLIPModel.from_pretrained(model_dir).eval()
    pixels = CLIPProcessor.from_pretrained(model_dir)(images=list(images), return_tensors="pt")["pixel_values"]
    features = _features(model.get_image_features(pixel_values=pixels))
    return features / features.norm(dim=-1, keepdim=True)


@torch.no_grad()
def reference_text_embeddings(model_dir: Path, prompts: list[str]) -> torch.Tensor:
    """get_text_features of the prompts, L2-normalised: (N, D) float32."""
    model = CLIPModel.from_pretrained(model_dir).eval()
    tokens = CLIPProcessor.from_pretrained(model_dir)(text=prompts, padding=True, return_tensors="pt")
    features = _features(model.get_text_features(**tokens))
    return features / features.norm(dim=-1, keepdim=True)


@torch.no_grad()
def write_aligned_clip(
    source_dir: Path, out_dir: Path, images: np.ndarray, targets: torch.Tensor, seed: int = 1
) -> Path:
    """Copy of `source_dir` whose visual projection maps images[i] to a multiple of targets[i] (k <= hidden).

    W = T^T pinv(P^T) + R (I - pinv(P) P), P: (k, hidden) pooled vision outputs of the images; the random
    R part acts only orthogonally to them, so any other image gets an embedding off the targets.
    """
    model = CLIPModel.from_pretrained(source_dir).eval()
    pixels = CLIPProcessor.from_pretrained(source_dir)(images=list(images), return_tensors="pt")["pixel_values"]
    pooled = model.vision_model(pixel_values=pixels).pooler_output.double()  # (k, hidden)
    targets = targets.double()  # (k, proj)
    hidden = pooled.shape[1]
    generator = torch.Generator().manual_seed(seed)
    random_part = torch.randn(targets.shape[1], hidden, generator=generator, dtype=torch.float64) * 0.2
    orthogonal = torch.eye(hidden, dtype=torch.float64) - torch.linalg.pinv(pooled) @ pooled
    weight = targets.T @ torch.linalg.pinv(pooled.T) + random_part @ orthogonal
    model.visual_projection.weight.copy_(weight.float())
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(source_dir / name, out_dir / name)
    return out_dir
