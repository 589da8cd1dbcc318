"""Whether a Hugging Face id can load here, decided before transformers tries: in the cache, or the hub reachable.

Without this, a model that is not cached on a machine that cannot reach the hub costs ~47 s of
huggingface_hub's retries (5 per file, 1+2+4+8+8 s) before the same "couldn't connect" error, and a
cached model pays the same wait before the cache is used. One request to the hub's endpoint, with the
library's own HF_HUB_ETAG_TIMEOUT, answers the question once per process (rewardflow_kit.hub, which
`rewardflow models` and the trainer use too).
"""

from __future__ import annotations

from rewardflow_kit.hub import RequiredModel, cached_snapshot, hub_cache_dir, hub_unreachable, is_hub_id

__all__ = [
    "ModelNotCached",
    "cached_snapshot",
    "clip_models",
    "hub_unreachable",
    "load_from_cache_only",
    "not_cached_error",
]


class ModelNotCached(OSError):
    """A hub model that is neither in the local cache nor downloadable now; the message is one line."""

    missing_model = True
    """Read by the kit, which then adds `run rewardflow models pull <service>` to the message."""


def not_cached_error(field: str, name: str, why: str) -> ModelNotCached:
    """The one-line error for a model that is not in the cache and cannot be downloaded now."""
    where = f"not in the local Hugging Face cache ({hub_cache_dir()})"
    return ModelNotCached(f"cannot load {field}={name!r}: {where} {why}")


def load_from_cache_only(field: str, name: str, revision: str | None, offline: bool) -> bool:
    """Whether a hub id must load from the cache only: offline, or the hub unreachable while the cache has it.

    Raises ModelNotCached when the cache lacks it and it cannot be downloaded now (offline, or no hub).
    """
    cached = cached_snapshot(name, revision) is not None
    if offline:
        if not cached:
            raise not_cached_error(field, name, "and HF_HUB_OFFLINE=1 keeps the hub offline")
        return True
    problem = hub_unreachable()
    if problem is None:
        return False
    if not cached:
        from huggingface_hub import constants

        raise not_cached_error(field, name, f"and the hub {constants.ENDPOINT} is unreachable ({problem})")
    return True


def clip_models(
    model_id: str, processor_id: str | None = None, revision: str | None = None, setting: str = "REWARDFLOW_MODEL"
) -> list[RequiredModel]:
    """What ClipEmbedder.load(model_id, processor_id=...) reads from the hub: the checkpoint (config and weights,
    safetensors where the repository has them) and, from a separate processor repository, only its tokenizer and
    preprocessing files. Local paths need nothing."""
    models = []
    if is_hub_id(model_id):
        models.append(RequiredModel(model_id, revision=revision, setting=setting))
    if processor_id and processor_id != model_id and is_hub_id(processor_id):
        models.append(
            RequiredModel(
                processor_id,
                required=("tokenizer_config.json", "preprocessor_config.json"),
                purpose="tokenizer and image preprocessing",
                setting="REWARDFLOW_PROCESSOR",
            )
        )
    return models
