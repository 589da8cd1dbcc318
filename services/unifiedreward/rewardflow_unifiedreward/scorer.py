"""UnifiedReward: a VLM judge's 1-5 rating of an image for its caption, or its win rate within a prompt group.

Pointwise (the default, Flow-GRPO's reward): score = rating / 5, as the reference trains on (so 0.2-1.0), and
rating (1-5); the raw answer is in the details. Pairwise (REWARDFLOW_UNIFIEDREWARD_MODE=pairwise, Pref-GRPO): the
images of one group_id (and prompt) are compared in pairs, score = win rate (ties count half), at most
max(REWARDFLOW_UNIFIEDREWARD_MAX_CALLS_PER_GROUP, n) judge calls per group of n (rewardflow_unifiedreward.pairs).
An answer that cannot be read is that image's `unparsable_answer` error with the text, never a 0.

The judge is reached through rewardflow_vlm: REWARDFLOW_VLM_BACKEND=served (default; sglang or vLLM serving
REWARDFLOW_MODEL) or in-process (a Qwen2-VL-family checkpoint such as CodeGoat24/UnifiedReward-qwen-7b).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from rewardflow_kit import Batch, ItemFailure, ItemScore
from rewardflow_kit.hub import RequiredModel
from rewardflow_vlm import JudgeFailure, JudgeQuery, VLMBackend, VLMSettings, make_backend, required_models

from rewardflow_unifiedreward.pairs import calls_bound, pair_schedule, tally
from rewardflow_unifiedreward.parsing import Unparsable, parse_final_score, parse_preference
from rewardflow_unifiedreward.settings import UnifiedRewardSettings
from rewardflow_unifiedreward.templates import PAIRWISE, POINTWISE

DEFAULT_MODEL = "CodeGoat24/UnifiedReward-7b-v1.5"
MAX_ANSWER_CHARS = 2000
"""How much of an unreadable answer an error message quotes."""


def unreadable(answer: str, reason: str) -> ItemFailure:
    return ItemFailure("unparsable_answer", f"{reason}; the judge answered: {answer[:MAX_ANSWER_CHARS]!r}")


class UnifiedRewardScorer:
    """Pointwise: "score" (rating / 5) and "rating"; pairwise: "score" (win rate in the group)."""

    name = "unifiedreward"
    version = "1.0.0"
    model_id = DEFAULT_MODEL
    device = "cpu"
    max_batch_size = 64

    def __init__(self, settings: UnifiedRewardSettings | None = None, vlm: VLMSettings | None = None) -> None:
        self.settings = settings if settings is not None else UnifiedRewardSettings()
        self.vlm_settings = vlm if vlm is not None else VLMSettings()
        self.backend: VLMBackend | None = None
        self.score_keys: tuple[str, ...] = ("score", "rating") if self.settings.mode == "pointwise" else ("score",)
        self.score_range: dict[str, tuple[float | None, float | None]] = (
            {"score": (0.2, 1.0), "rating": (1.0, 5.0)} if self.settings.mode == "pointwise" else {"score": (0.0, 1.0)}
        )

    def load(self) -> None:
        """Reach (served) or load (in-process) the judge."""
        self.backend = make_backend(self.vlm_settings, self.model_id, self.device)
        self.backend.load()

    def required_models(self) -> list[RequiredModel]:
        """REWARDFLOW_MODEL from the hub cache when the judge runs in-process; nothing when it is served."""
        return required_models(self.vlm_settings, self.model_id)

    def warmup_batch(self) -> Batch:
        """One judge call: one image (pointwise), or a group of two (pairwise)."""
        n = 2 if self.settings.mode == "pairwise" else 1
        images = [np.full((64, 64, 3), 64 + 128 * i, dtype=np.uint8) for i in range(n)]
        return Batch(images=images, prompts=["a photo of a cat"] * n, metadata=[{}] * n, group_ids=["warmup"] * n)

    @property
    def resize_to(self) -> tuple[int, int] | None:
        size = self.settings.image_size
        return (size, size) if size else None

    def score(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        if self.backend is None:
            raise RuntimeError("UnifiedRewardScorer.score called before load()")
        if self.settings.mode == "pairwise":
            return self.score_pairwise(batch)
        return self.score_pointwise(batch)

    def query(self, images: tuple[np.ndarray, ...], prompt: str, template: Any) -> JudgeQuery:
        served = self.vlm_settings.backend == "served"
        return JudgeQuery(
            images=images,
            text=template.render(prompt, served),
            max_new_tokens=self.settings.max_new_tokens,
            resize_to=self.resize_to,
        )

    def score_pointwise(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        """One judge call per image: its 'Final Score:' rating."""
        assert self.backend is not None
        queries = [
            self.query((image,), prompt, POINTWISE) for image, prompt in zip(batch.images, batch.prompts, strict=True)
        ]
        out: list[ItemScore | ItemFailure] = []
        for answer in self.backend.answer(queries):
            if isinstance(answer, JudgeFailure):
                out.append(ItemFailure(answer.code, answer.message))
                continue
            try:
                rating = parse_final_score(answer)
            except Unparsable as exc:
                out.append(unreadable(answer, str(exc)))
                continue
            out.append(ItemScore({"score": rating / 5.0, "rating": rating}, details={"answer": answer}))
        return out

    def score_pairwise(self, batch: Batch) -> list[ItemScore | ItemFailure]:
        """Judge calls for every group of the batch at once, then each image's win rate in its group."""
        assert self.backend is not None
        out: list[ItemScore | ItemFailure | None] = [None] * len(batch)
        groups: dict[tuple[Any, str], list[int]] = defaultdict(list)
        for index, (group, prompt) in enumerate(zip(group_ids_of(batch), batch.prompts, strict=True)):
            if group is None:
                out[index] = ItemFailure("bad_group", "pairwise mode compares images of one group_id; this has none")
            else:
                groups[(group, prompt)].append(index)
        plans = []
        for members in groups.values():
            if len(members) < 2:
                out[members[0]] = ItemFailure("bad_group", "pairwise mode needs at least 2 images per group_id+prompt")
                continue
            pairs = pair_schedule(len(members), self.settings.max_calls_per_group)
            plans.append((members, pairs))
        queries = [
            self.query((batch.images[members[a]], batch.images[members[b]]), batch.prompts[members[0]], PAIRWISE)
            for members, pairs in plans
            for a, b in pairs
        ]
        answers = iter(self.backend.answer(queries))
        for members, pairs in plans:
            self.fill_group(out, members, pairs, [next(answers) for _ in pairs])
        return [item if item is not None else ItemFailure("score_failed", "not scored") for item in out]

    def fill_group(
        self,
        out: list[ItemScore | ItemFailure | None],
        members: list[int],
        pairs: list[tuple[int, int]],
        answers: list[str | JudgeFailure],
    ) -> None:
        """Each member's win rate (or failure) from its group's answers."""
        verdicts: list[int | None] = []
        texts: list[str] = []
        for answer in answers:
            if isinstance(answer, JudgeFailure):
                verdicts.append(None)
                texts.append(f"[{answer.code}] {answer.message}")
                continue
            texts.append(answer)
            try:
                verdicts.append(parse_preference(answer))
            except Unparsable:
                verdicts.append(None)
        calls = calls_bound(len(members), self.settings.max_calls_per_group)
        for position, (index, record) in enumerate(
            zip(members, tally(len(members), pairs, verdicts, texts), strict=True)
        ):
            if record.decided == 0:
                quoted = "; ".join(repr(c["answer"])[:MAX_ANSWER_CHARS] for c in record.comparisons)
                out[index] = ItemFailure("unparsable_answer", f"no comparison of this image was readable: {quoted}")
                continue
            details = {
                "mode": "pairwise",
                "position_in_group": position,
                "wins": record.wins,
                "losses": record.losses,
                "ties": record.ties,
                "unparsed": record.unparsed,
                "judge_calls_in_group": calls,
                "comparisons": record.comparisons,
            }
            out[index] = ItemScore({"score": record.win_rate()}, details=details)


def group_ids_of(batch: Batch) -> list[Any]:
    """The batch's group ids, None for every item when the batch carries none."""
    return list(batch.group_ids) if batch.group_ids else [None] * len(batch)
