"""What a training run reads from the Hugging Face hub: the model to fine-tune (its diffusers folders) and the
models of the reward services it starts; and a check, before anything loads, that the model can load here.

`rewardflow models list|pull --trainer PRESET` reads `run_models`; the trainer and `rewardflow eval geneval` call
`check_pretrained` so that a model missing from the cache on a machine without the hub fails in one line.
"""

from __future__ import annotations

from rewardflow_kit.hub import RequiredModel, hub_cache_dir, is_hub_id, unavailable_reason

from rewardflow_trainer.config import Config, ConfigError

FAMILY_FOLDERS: dict[str, tuple[str, ...]] = {
    "sd3": ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"),
    "flux": ("transformer", "vae", "text_encoder", "text_encoder_2"),
    "qwen_image": ("transformer", "vae", "text_encoder"),
}
"""The model folders each family's from_pretrained loads (with their tokenizers and the scheduler). The
repositories' single-file checkpoints (sd3.5_medium.safetensors, text_encoders/, flux1-dev.safetensors,
ae.safetensors: as large again as the folders) are left out."""


def _family_files(folders: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(required, optional) hub file patterns of a diffusers checkpoint made of `folders`."""
    tokenizers = [
        f"tokenizer{folder.removeprefix('text_encoder')}/*" for folder in folders if folder.startswith("text_encoder")
    ]
    required = (
        "model_index.json",
        *(f"{folder}/config.json" for folder in folders),
        *(f"{folder}/*.safetensors" for folder in folders),
        *tokenizers,
        "scheduler/*",
    )
    optional = tuple(f"{folder}/*.json" for folder in folders)  # index files of sharded weights, generation configs
    return required, optional


FAMILY_FILES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    family: _family_files(folders) for family, folders in FAMILY_FOLDERS.items()
}
"""Model family -> (required, optional) file patterns of its diffusers checkpoint on the hub."""

GATED_ORGS = ("stabilityai/", "black-forest-labs/")
"""Their models ask users to accept a license on the model page and to log in before downloading."""


def pretrained_model(family: str, repo_id: str | None, revision: str | None = None) -> RequiredModel | None:
    """The hub checkpoint to fine-tune (None for the tiny model or a local folder)."""
    if not is_hub_id(repo_id) or repo_id == "tiny":
        return None
    required, optional = FAMILY_FILES.get(family, (("model_index.json",), ("*",)))
    return RequiredModel(
        str(repo_id),
        required,
        optional,
        revision,
        purpose=f"the {family} model to fine-tune",
        setting="model.pretrained",
        gated=str(repo_id).startswith(GATED_ORGS),
    )


def run_models(config: Config) -> list[tuple[str, RequiredModel]]:
    """(who needs it, model) for a run: 'model.pretrained', then each reward service it would start, with the
    run's reward.local_env (e.g. REWARDFLOW_GENEVAL_DETECTOR=shapes needs no model)."""
    from rewardflow_kit.registry import service_models, service_names

    models: list[tuple[str, RequiredModel]] = []
    model = pretrained_model(config.model.family, config.model.pretrained, config.model.revision)
    if model is not None:
        models.append(("model.pretrained", model))
    for service in config.reward.services(service_names()):
        models += [(service, m) for m in service_models(service, config.reward.local_env)]
    return models


def check_pretrained(family: str, repo_id: str | None, revision: str | None, fix: str, key: str) -> None:
    """ConfigError, in one line, when a hub checkpoint is not cached and cannot be downloaded now; `fix` says
    how to get it (e.g. `rewardflow models pull --trainer sd3_pickscore`), `key` names the setting."""
    model = pretrained_model(family, repo_id, revision)
    if model is None:
        return
    reason = unavailable_reason(model.repo_id, model.revision)
    if reason is not None:
        raise ConfigError(
            f"{key} = {model.repo_id!r}: not in the local Hugging Face cache ({hub_cache_dir()}) and {reason}; "
            f"{fix} where the hub is reachable"
        )
