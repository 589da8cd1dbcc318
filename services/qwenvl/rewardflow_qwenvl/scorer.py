"""QwenVL: Qwen2.5-VL-7B-Instruct asked Flow-GRPO's aesthetic question; score = <Score> / 5, as the reference.

The reference runs the model in-process (transformers, bf16, up to 2048 new tokens), so that is this service's
default backend (REWARDFLOW_VLM_BACKEND=in-process); REWARDFLOW_VLM_BACKEND=served asks an OpenAI-compatible
server instead. Where the reference scores an unreadable answer 0, this service returns `unparsable_answer` with
the text.
"""

from __future__ import annotations

import numpy as np
from rewardflow_kit import Batch, ItemFailure, ItemScore
from rewardflow_kit.hub import RequiredModel
from rewardflow_vlm import JudgeFailure, JudgeQuery, VLMBackend, VLMSettings, make_backend, required_models
from rewardflow_vlm.settings import InProcessVLMSettings

from rewardflow_qwenvl.parsing import Unparsable, parse_score_tag
from rewardflow_qwenvl.templates import AESTHETIC_TASK

DEFAULT_MODEL = "Qwen/Qwen2.5-VL-7B-Instruct"
MAX_NEW_TOKENS = 2048
"""The reference's generate(max_new_tokens=2048): the analysis comes before the score."""


class QwenVLScorer:
    """Scores "score" (<Score> / 5) and "rating" (<Score>, 1-5); the answer is in the details."""

    name = "qwenvl"
    version = "1.0.0"
    model_id = DEFAULT_MODEL
    device = "cpu"
    score_keys = ("score", "rating")
    max_batch_size = 32

    def __init__(self, vlm: VLMSettings | None = None) -> None:
        self.vlm_settings = vlm if vlm is not None else InProcessVLMSettings()
        self.backend: VLMBackend | None = None
        self.score_range: dict[str, tuple[float | None, float | None]] = {"score": (0.2, 1.0), "rating": (1, 5)}

    def load(self) -> None:
        self.backend = make_backend(self.vlm_settings, self.model_id, self.device)
        self.backend.load()

    def required_models(self) -> list[RequiredModel]:
        """REWARDFLOW_MODEL from the hub cache when in-process; nothing when served."""
        return required_models(self.vlm_settings, self.model_id)

    def warmup_batch(self) -> Batch:
        images = [np.full((64, 64, 3), 128, dtype=np.uint8)]
        return Batch(images=images, prompts=["warm-up"], metadata=[{}], group_ids=[None])

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        if self.backend is None:
            raise RuntimeError("QwenVLScorer.score called before load()")
        queries = [
            JudgeQuery(images=(image,), text=AESTHETIC_TASK, max_new_tokens=MAX_NEW_TOKENS) for image in batch.images
        ]
        out: list[ItemScore | ItemFailure] = []
        for answer in self.backend.answer(queries):
            if isinstance(answer, JudgeFailure):
                out.append(ItemFailure(answer.code, answer.message))
                continue
            try:
                rating = parse_score_tag(answer)
            except Unparsable as exc:
                out.append(ItemFailure("unparsable_answer", f"{exc}; the judge answered: {answer[:2000]!r}"))
                continue
            out.append(ItemScore({"score": rating / 5.0, "rating": float(rating)}, details={"answer": answer}))
        return out
