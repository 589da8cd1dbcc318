"""DeQA: the expected quality level of an image, from a VLM's logits at the level words (in-process only).

score = expected level / 5 (what Flow-GRPO's reward server returns), quality = expected level (1-5), and the
five probabilities in the details. The logits come from the in-process backend (rewardflow_vlm.InProcessVLM,
a Qwen2-VL-family checkpoint); a served chat-completions endpoint cannot give them, so
REWARDFLOW_VLM_BACKEND=served is refused at load. services/deqa/README.md says what runs and what to download.
"""

from __future__ import annotations

import numpy as np
from rewardflow_kit import Batch, ItemFailure, ItemScore
from rewardflow_kit.hub import RequiredModel
from rewardflow_vlm import JudgeQuery, VLMSettings, required_models
from rewardflow_vlm.inprocess import InProcessVLM
from rewardflow_vlm.settings import InProcessVLMSettings

from rewardflow_deqa.readout import ANSWER_PREFIX, LEVELS, QUESTION, REWARD_DIVISOR, expected_quality, pad_to_square

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


class DeQAScorer:
    """Scores "score" (expected level / 5) and "quality" (expected level, 1-5)."""

    name = "deqa"
    version = "1.0.0"
    model_id = DEFAULT_MODEL
    device = "cpu"
    score_keys = ("score", "quality")
    max_batch_size = 32

    def __init__(self, vlm: VLMSettings | None = None) -> None:
        self.vlm_settings = vlm if vlm is not None else InProcessVLMSettings()
        self.vlm: InProcessVLM | None = None
        self.level_ids: list[int] = []
        self.fill = (0, 0, 0)
        self.score_range: dict[str, tuple[float | None, float | None]] = {"score": (0.2, 1.0), "quality": (1.0, 5.0)}

    def load(self) -> None:
        """Load the VLM in-process and find the level words' token ids."""
        if self.vlm_settings.backend != "in-process":
            raise ValueError(
                f"REWARDFLOW_VLM_BACKEND={self.vlm_settings.backend!r}: deqa reads next-token logits, which a "
                "chat-completions server does not return; expected 'in-process'"
            )
        vlm = InProcessVLM(self.vlm_settings, self.model_id, self.device)
        vlm.load()
        ids = [vlm.first_token_id(" " + word) for word, _ in LEVELS]
        if len(set(ids)) != len(ids):
            raise ValueError(f"REWARDFLOW_MODEL={self.model_id!r}: the level words share first tokens {ids}")
        mean = getattr(vlm.image_processor, "image_mean", None) or CLIP_MEAN
        self.fill = tuple(int(channel * 255) for channel in mean[:3])  # type: ignore[assignment]
        self.vlm, self.level_ids = vlm, ids

    def required_models(self) -> list[RequiredModel]:
        """REWARDFLOW_MODEL (always in-process)."""
        return required_models(self.vlm_settings.model_copy(update={"backend": "in-process"}), self.model_id)

    def warmup_batch(self) -> Batch:
        images = [np.full((64, 48, 3), 128, dtype=np.uint8)]
        return Batch(images=images, prompts=["warm-up"], metadata=[{}], group_ids=[None])

    def level_logits(self, images: list[np.ndarray]) -> np.ndarray:
        """(N, 5) logits of the level words after DeQA's question and answer prefix."""
        assert self.vlm is not None
        queries = [
            JudgeQuery(images=(pad_to_square(image, self.fill),), text=QUESTION, answer_prefix=ANSWER_PREFIX)
            for image in images
        ]
        return self.vlm.next_token_logits(queries, self.level_ids)

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        if self.vlm is None:
            raise RuntimeError("DeQAScorer.score called before load()")
        logits = self.level_logits(batch.images)
        quality, probs = expected_quality(logits)
        words = [word for word, _ in LEVELS]
        return [
            ItemScore(
                {"score": float(q) / REWARD_DIVISOR, "quality": float(q)},
                details={"probabilities": dict(zip(words, map(float, p), strict=True))},
            )
            for q, p in zip(quality, probs, strict=True)
        ]
