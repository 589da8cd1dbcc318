"""Which files `rewardflow models pull` downloads for each family's hub checkpoint (hub_models.FAMILY_FILES).

The listings are the file names of the real repositories (as published on the hub); the patterns go through
huggingface_hub's own filter, the one snapshot_download applies to allow_patterns.
"""

from __future__ import annotations

import fnmatch

import pytest
from huggingface_hub.utils import filter_repo_objects
from rewardflow_trainer.hub_models import FAMILY_FILES, pretrained_model

TOKENIZER_FILES = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")
LISTINGS = {
    "sd3": (
        "stabilityai/stable-diffusion-3.5-medium",
        [
            "sd3.5_medium.safetensors",
            "text_encoders/clip_g.safetensors",
            "text_encoders/t5xxl_fp16.safetensors",
            "model_index.json",
            "scheduler/scheduler_config.json",
            *(f"text_encoder/{f}" for f in ("config.json", "model.safetensors")),
            *(f"text_encoder_2/{f}" for f in ("config.json", "model.safetensors")),
            "text_encoder_3/config.json",
            "text_encoder_3/model-00001-of-00002.safetensors",
            "text_encoder_3/model-00002-of-00002.safetensors",
            "text_encoder_3/model.safetensors.index.json",
            *(f"tokenizer/{f}" for f in TOKENIZER_FILES),
            *(f"tokenizer_2/{f}" for f in TOKENIZER_FILES),
            *(f"tokenizer_3/{f}" for f in ("special_tokens_map.json", "spiece.model", "tokenizer.json")),
            "transformer/config.json",
            "transformer/diffusion_pytorch_model.safetensors",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "README.md",
        ],
    ),
    "flux": (
        "black-forest-labs/FLUX.1-dev",
        [
            "flux1-dev.safetensors",
            "ae.safetensors",
            "dev_grid.jpg",
            "model_index.json",
            "scheduler/scheduler_config.json",
            *(f"text_encoder/{f}" for f in ("config.json", "model.safetensors")),
            "text_encoder_2/config.json",
            "text_encoder_2/model-00001-of-00002.safetensors",
            "text_encoder_2/model-00002-of-00002.safetensors",
            "text_encoder_2/model.safetensors.index.json",
            *(f"tokenizer/{f}" for f in TOKENIZER_FILES),
            *(f"tokenizer_2/{f}" for f in ("special_tokens_map.json", "spiece.model", "tokenizer.json")),
            "transformer/config.json",
            *(f"transformer/diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)),
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
        ],
    ),
    "qwen_image": (
        "Qwen/Qwen-Image",
        [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/generation_config.json",
            *(f"text_encoder/model-0000{i}-of-00004.safetensors" for i in (1, 2, 3, 4)),
            "text_encoder/model.safetensors.index.json",
            *(f"tokenizer/{f}" for f in ("merges.txt", "tokenizer_config.json", "vocab.json")),
            "transformer/config.json",
            *(f"transformer/diffusion_pytorch_model-0000{i}-of-00009.safetensors" for i in range(1, 10)),
            "transformer/diffusion_pytorch_model.safetensors.index.json",
            "vae/config.json",
            "vae/diffusion_pytorch_model.safetensors",
            "README.md",
        ],
    ),
}


@pytest.mark.parametrize("family", sorted(LISTINGS))
def test_pull_selects_the_diffusers_folders_and_leaves_the_single_file_checkpoints(family: str) -> None:
    repo_id, listing = LISTINGS[family]
    model = pretrained_model(family, repo_id)
    assert model is not None and model.repo_id == repo_id
    picked = set(filter_repo_objects(listing, allow_patterns=[*model.required, *model.optional]))
    in_folders = {name for name in listing if "/" in name and not name.startswith("text_encoders/")}
    assert picked == in_folders | {"model_index.json"}, sorted(set(listing) ^ picked)
    # every required pattern matches a file of the real repository (a wrong folder name would fail here)
    for pattern in model.required:
        assert any(fnmatch.fnmatch(name, pattern) for name in listing), (family, pattern)


def test_every_family_of_the_registry_has_its_own_patterns() -> None:
    from rewardflow_trainer.models import FAMILIES

    assert set(FAMILY_FILES) == set(FAMILIES)
