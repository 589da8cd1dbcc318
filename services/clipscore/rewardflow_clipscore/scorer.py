"""CLIPScore: cosine(image, prompt) under CLIP ViT-L/14, in three scalings.

- "score" (primary): logit_scale * cos / 30, Flow-GRPO's clipscore reward (`logits_per_image / 30`);
  with OpenAI CLIP's logit_scale of 100 that is cos * 10/3.
- "cosine": the raw cosine, in [-1, 1].
- "hessel": CLIPScore as defined by Hessel et al. 2021 (arXiv:2104.08718): 2.5 * max(cos, 0), the
  scaling captioning papers report (often x100).

Settings (env): REWARDFLOW_MODEL (default openai/clip-vit-large-patch14), REWARDFLOW_PROCESSOR (default:
the model's), REWARDFLOW_DTYPE, REWARDFLOW_REVISION, REWARDFLOW_DEVICE; HF_HUB_OFFLINE=1 loads from the cache only.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from rewardflow_kit import Batch, ItemScore
from rewardflow_kit.hub import RequiredModel
from rewardflow_vision import ClipEmbedder, ModelSettings
from rewardflow_vision.hub import clip_models

DEFAULT_MODEL = "openai/clip-vit-large-patch14"
REFERENCE_DIVISOR = 30.0
"""Flow-GRPO divides CLIP's logits (logit_scale * cos) by 30."""
HESSEL_W = 2.5
"""CLIPScore's w (Hessel et al. 2021): rescales cosines of real image-caption pairs to roughly [0, 1]."""


class ClipScoreScorer:
    """Scores "score" (logit_scale * cos / 30, primary), "cosine" and "hessel" (2.5 * max(cos, 0))."""

    name = "clipscore"
    version = "1.0.0"
    model_id = DEFAULT_MODEL
    device = "cpu"
    score_keys = ("score", "cosine", "hessel")
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "score": (None, None),
        "cosine": (-1.0, 1.0),
        "hessel": (0.0, HESSEL_W),
    }
    max_batch_size = 64

    def __init__(self, settings: ModelSettings | None = None) -> None:
        self.settings = settings if settings is not None else ModelSettings()
        self.embedder: ClipEmbedder | None = None

    def load(self) -> None:
        """Load the CLIP model, tokenizer and preprocessing; set the primary range from the logit scale."""
        self.embedder = ClipEmbedder.load(
            self.model_id,
            processor_id=self.settings.processor,
            device=self.device,
            dtype=self.settings.dtype,
            revision=self.settings.revision,
        )
        scale = self.embedder.logit_scale / REFERENCE_DIVISOR
        self.score_range = {**self.score_range, "score": (-scale, scale)}

    def required_models(self) -> list[RequiredModel]:
        """The CLIP checkpoint (REWARDFLOW_MODEL), and REWARDFLOW_PROCESSOR's tokenizer and preprocessing if set."""
        return clip_models(self.model_id, self.settings.processor, self.settings.revision)

    def warmup_batch(self) -> Batch:
        """Two 512x512 images (the usual rollout size) so the warm-up runs the resize path the rollouts use."""
        images = [np.full((512, 512, 3), value, dtype=np.uint8) for value in (64, 192)]
        return Batch(images=images, prompts=["a photo of a cat"] * 2, metadata=[{}, {}], group_ids=[None, None])

    def score(self, batch: Batch) -> list[ItemScore]:
        if self.embedder is None:
            raise RuntimeError("ClipScoreScorer.score called before load()")
        cosine = (self.embedder.image_embeddings(batch.images) * self.embedder.text_embeddings(batch.prompts)).sum(-1)
        scale = self.embedder.logit_scale / REFERENCE_DIVISOR
        return [ItemScore({"score": scale * c, "cosine": c, "hessel": HESSEL_W * max(c, 0.0)}) for c in cosine.tolist()]
