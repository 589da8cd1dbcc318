"""PickScore: logit_scale * cosine(image, prompt) under the PickScore_v1 CLIP-H model (as Flow-GRPO scores it).

Settings (env): REWARDFLOW_MODEL (default yuvalkirstain/PickScore_v1), REWARDFLOW_PROCESSOR (tokenizer
and image preprocessing, default laion/CLIP-ViT-H-14-laion2B-s32B-b79K), REWARDFLOW_DTYPE,
REWARDFLOW_REVISION (of the model), REWARDFLOW_DEVICE; HF_HUB_OFFLINE=1 loads from the cache only.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from rewardflow_kit import Batch, ItemScore
from rewardflow_kit.hub import RequiredModel
from rewardflow_vision import ClipEmbedder, ModelSettings
from rewardflow_vision.hub import clip_models

DEFAULT_MODEL = "yuvalkirstain/PickScore_v1"
DEFAULT_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
REFERENCE_DIVISOR = 26.0
"""Flow-GRPO's pickscore reward divides logit_scale * cosine by 26; its published 21.72 -> 23.31 are the raw values."""


class PickScoreScorer:
    """Scores "score" (logit_scale * cos / 26, primary: what the reference trains on) and "raw" (logit_scale * cos)."""

    name = "pickscore"
    version = "1.0.0"
    model_id = DEFAULT_MODEL
    device = "cpu"
    score_keys = ("score", "raw")
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {"score": (None, None), "raw": (None, None)}
    max_batch_size = 64

    def __init__(self, settings: ModelSettings | None = None) -> None:
        self.settings = settings if settings is not None else ModelSettings()
        self.embedder: ClipEmbedder | None = None

    def load(self) -> None:
        """Load the CLIP model, tokenizer and preprocessing; set the score ranges from the model's logit scale."""
        self.embedder = ClipEmbedder.load(
            self.model_id,
            processor_id=self.settings.processor or DEFAULT_PROCESSOR,
            device=self.device,
            dtype=self.settings.dtype,
            revision=self.settings.revision,
        )
        scale = self.embedder.logit_scale
        # Per instance: cosine lies in [-1, 1], so the scores lie in +-scale (/26).
        self.score_range = {
            "score": (-scale / REFERENCE_DIVISOR, scale / REFERENCE_DIVISOR),
            "raw": (-scale, scale),
        }

    def required_models(self) -> list[RequiredModel]:
        """The CLIP-H checkpoint (REWARDFLOW_MODEL) and the tokenizer and preprocessing of REWARDFLOW_PROCESSOR."""
        return clip_models(self.model_id, self.settings.processor or DEFAULT_PROCESSOR, self.settings.revision)

    def warmup_batch(self) -> Batch:
        """Two 512x512 images (the usual rollout size) so the warm-up runs the resize path the rollouts use."""
        images = [np.full((512, 512, 3), value, dtype=np.uint8) for value in (64, 192)]
        return Batch(images=images, prompts=["a photo of a cat"] * 2, metadata=[{}, {}], group_ids=[None, None])

    def score(self, batch: Batch) -> list[ItemScore]:
        if self.embedder is None:
            raise RuntimeError("PickScoreScorer.score called before load()")
        cosine = (self.embedder.image_embeddings(batch.images) * self.embedder.text_embeddings(batch.prompts)).sum(-1)
        raw = (self.embedder.logit_scale * cosine).tolist()
        return [ItemScore({"score": r / REFERENCE_DIVISOR, "raw": r}) for r in raw]
