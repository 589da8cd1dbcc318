"""Aesthetic score: LAION's MLP head on the L2-normalised CLIP ViT-L/14 image embedding (as ddpo/Flow-GRPO do).

Settings (env): REWARDFLOW_HEAD (required: path to sac+logos+ava1-l14-linearMSE.pth or a .safetensors
copy; from christophschuhmann/improved-aesthetic-predictor), REWARDFLOW_MODEL (default
openai/clip-vit-large-patch14), REWARDFLOW_PROCESSOR (default: the model's), REWARDFLOW_DTYPE,
REWARDFLOW_REVISION, REWARDFLOW_DEVICE; HF_HUB_OFFLINE=1 loads from the cache only. The prompt is unused.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from rewardflow_kit import Batch, ItemScore
from rewardflow_kit.hub import RequiredModel
from rewardflow_vision import ClipImageEmbedder, ModelSettings
from rewardflow_vision.hub import clip_models

from rewardflow_aesthetic.head import AestheticHead, load_head

DEFAULT_MODEL = "openai/clip-vit-large-patch14"
HEAD_FILE = "sac+logos+ava1-l14-linearMSE.pth"


class AestheticSettings(ModelSettings):
    """ModelSettings plus where the head's weights are."""

    head: str | None = Field(
        None, description=f"Path to the aesthetic head weights ({HEAD_FILE} or .safetensors); required."
    )


class AestheticScorer:
    """Scores "score": the head's predicted rating of the image (roughly 1-10 for the released head)."""

    name = "aesthetic"
    version = "1.0.0"
    model_id = DEFAULT_MODEL
    device = "cpu"
    score_keys = ("score",)
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {"score": (None, None)}
    max_batch_size = 64

    def __init__(self, settings: AestheticSettings | None = None) -> None:
        self.settings = settings if settings is not None else AestheticSettings()
        self.embedder: ClipImageEmbedder | None = None
        self.head: AestheticHead | None = None

    def load(self) -> None:
        """Load the head first (cheap, the likelier mistake), then the CLIP vision tower; check their sizes agree."""
        if not self.settings.head:
            raise ValueError(
                f"REWARDFLOW_HEAD is not set; expected the path of {HEAD_FILE} (download it from "
                "github.com/christophschuhmann/improved-aesthetic-predictor) or a .safetensors copy"
            )
        head = load_head(self.settings.head, device="cpu")
        embedder = ClipImageEmbedder.load(
            self.model_id,
            processor_id=self.settings.processor,
            device=self.device,
            dtype=self.settings.dtype,
            revision=self.settings.revision,
        )
        if embedder.embedding_dim != head.input_size:
            raise ValueError(
                f"REWARDFLOW_HEAD={self.settings.head!r} takes {head.input_size}-d embeddings but "
                f"REWARDFLOW_MODEL={self.model_id!r} gives {embedder.embedding_dim}-d; expected a head for this CLIP"
            )
        self.head = head.to(embedder.device)
        self.embedder = embedder

    def required_models(self) -> list[RequiredModel]:
        """The CLIP checkpoint (its vision tower is used); the head (REWARDFLOW_HEAD) is a local file, not a hub one."""
        models = clip_models(self.model_id, self.settings.processor, self.settings.revision)
        note = (
            f"REWARDFLOW_HEAD: a local file ({HEAD_FILE}, github.com/christophschuhmann/improved-aesthetic-predictor)"
        )
        return [dataclasses.replace(models[0], notes=(note,)), *models[1:]] if models else []

    def warmup_batch(self) -> Batch:
        """Two 512x512 images (the usual rollout size) so the warm-up runs the resize path the rollouts use."""
        images = [np.full((512, 512, 3), value, dtype=np.uint8) for value in (64, 192)]
        return Batch(images=images, prompts=["", ""], metadata=[{}, {}], group_ids=[None, None])

    @torch.inference_mode()
    def score(self, batch: Batch) -> list[ItemScore]:
        if self.embedder is None or self.head is None:
            raise RuntimeError("AestheticScorer.score called before load()")
        ratings = self.head(self.embedder.image_embeddings(batch.images))
        return [ItemScore({"score": rating}) for rating in ratings.tolist()]
