"""The seam: one `VLMBackend` protocol, two backends, chosen by REWARDFLOW_VLM_BACKEND."""

from __future__ import annotations

from typing import Protocol

from rewardflow_kit.hub import RequiredModel, is_hub_id

from rewardflow_vlm.query import JudgeFailure, JudgeQuery
from rewardflow_vlm.settings import VLMSettings


class VLMBackend(Protocol):
    """What a judge scorer calls: `load()` once, then `answer(queries)` from the kit's model thread."""

    kind: str

    def load(self) -> None: ...

    def answer(self, queries: list[JudgeQuery]) -> list[str | JudgeFailure]: ...

    def close(self) -> None: ...


def make_backend(settings: VLMSettings, model: str, device: str) -> VLMBackend:
    """The backend REWARDFLOW_VLM_BACKEND names, for model `model` (REWARDFLOW_MODEL) on `device`."""
    if settings.backend == "served":
        from rewardflow_vlm.served import ServedVLM

        return ServedVLM(settings, model)
    from rewardflow_vlm.inprocess import InProcessVLM

    return InProcessVLM(settings, model, device)


def required_models(settings: VLMSettings, model: str) -> list[RequiredModel]:
    """What the hub cache must hold: the checkpoint and its tokenizer and processor files when in-process; a
    served judge's weights belong to its server, so nothing."""
    if settings.backend == "served" or not is_hub_id(model):
        return []
    return [
        RequiredModel(
            repo_id=model,
            required=("config.json", "*.safetensors", "tokenizer*.json|tokenizer.model"),
            optional=("*.json", "*.txt", "*.jinja"),
            revision=settings.revision,
            purpose="vision-language judge (in-process)",
        )
    ]
