"""The released checkpoint (`ImageReward.pt` + `med_config.json`) onto ImageRewardModel: files, key renames, load.

The released `ImageReward.pt` is the state dict of THUDM's `ImageReward` module: `blip.visual_encoder.*`
(BLIP's timm-style ViT), `blip.text_encoder.*` (BLIP's med.py BERT), `blip.vision_proj.*`,
`blip.text_proj.*` (BLIP pre-training projections the reward never uses) and `mlp.layers.*` (the head).
The renames are those of transformers' BLIP conversion script
(`convert_blip_original_pytorch_to_hf.py: rename_key`), written here as exact prefix pairs so that
the map can be inverted (the tests build released-style checkpoints with the inverse).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rewardflow_vision import ModelSource, load_state_dict_file
from rewardflow_vision.loading import where

from rewardflow_imagereward.model import VIT_LARGE, ImageRewardModel, VisionSpec, text_config_from_med

CHECKPOINT_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
VISION_CONFIG_FILE = "vision_config.json"
"""Not in the release (whose ViT-L is fixed in code): an optional rewardflow file for other ViT sizes (tiny tests)."""
RELEASED_PREFIX = "blip."

PREFIX_RENAMES: tuple[tuple[str, str], ...] = (
    ("blip.visual_encoder.cls_token", "vision_model.embeddings.class_embedding"),
    ("blip.visual_encoder.pos_embed", "vision_model.embeddings.position_embedding"),
    ("blip.visual_encoder.patch_embed.proj.", "vision_model.embeddings.patch_embedding."),
    ("blip.visual_encoder.norm.", "vision_model.post_layernorm."),
    ("blip.visual_encoder.blocks.", "vision_model.encoder.layers."),
    ("blip.text_encoder.", "text_encoder."),
    ("mlp.", "mlp."),
)
"""(released prefix, model prefix); a key is renamed by the first pair whose released prefix it starts with."""
BLOCK_RENAMES: tuple[tuple[str, str], ...] = (
    ("norm1.", "layer_norm1."),
    ("norm2.", "layer_norm2."),
    ("attn.qkv.", "self_attn.qkv."),
    ("attn.proj.", "self_attn.projection."),
    ("mlp.fc1.", "mlp.fc1."),
    ("mlp.fc2.", "mlp.fc2."),
)
"""Inside one ViT block (after `blocks.<i>.` / `layers.<i>.`): (released, model)."""
UNUSED_RELEASED_KEYS = frozenset(
    {
        "blip.vision_proj.weight",
        "blip.vision_proj.bias",
        "blip.text_proj.weight",
        "blip.text_proj.bias",
        "blip.text_encoder.embeddings.position_ids",  # a persistent buffer in med.py; arange, rebuilt here
    }
)
"""Released keys the reward does not use (BLIP_Pretrain's contrastive projections, a buffer)."""


def _rename(key: str, prefixes: tuple[tuple[str, str], ...], blocks: tuple[tuple[str, str], ...]) -> str | None:
    for source, target in prefixes:
        if key == source or (source.endswith(".") and key.startswith(source)):
            rest = key[len(source) :]
            if source.endswith("blocks.") or source.endswith("layers."):
                index, _, inner = rest.partition(".")
                for inner_source, inner_target in blocks:
                    if inner.startswith(inner_source):
                        return f"{target}{index}.{inner_target}{inner[len(inner_source) :]}"
                return None
            return target + rest
    return None


def to_model_key(released_key: str) -> str | None:
    """The ImageRewardModel key for a released key; None if no rename rule covers it."""
    return _rename(released_key, PREFIX_RENAMES, BLOCK_RENAMES)


def to_released_key(model_key: str) -> str | None:
    """The released key for an ImageRewardModel key (the inverse of `to_model_key`)."""
    inverse_prefixes = tuple((model, released) for released, model in PREFIX_RENAMES)
    inverse_blocks = tuple((model, released) for released, model in BLOCK_RENAMES)
    return _rename(model_key, inverse_prefixes, inverse_blocks)


@dataclass
class LoadReport:
    """What loading a released state dict did: keys ignored on purpose; missing/unexpected are errors."""

    loaded: int
    ignored: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def convert_state_dict(released: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """Rename released keys: (model state dict, ignored released keys, released keys no rule covers)."""
    converted: dict[str, torch.Tensor] = {}
    ignored, unknown = [], []
    for key, value in released.items():
        if key in UNUSED_RELEASED_KEYS:
            ignored.append(key)
            continue
        new_key = to_model_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    return converted, sorted(ignored), sorted(unknown)


def check_released_state(model: ImageRewardModel, released: dict[str, torch.Tensor]) -> LoadReport:
    """Match a released-style state dict against `model` by key and shape (no data read); raise on any mismatch."""
    converted, ignored, unknown = convert_state_dict(released)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(converted))
    unexpected = sorted(unknown + [key for key in converted if key not in expected])
    if missing or unexpected:
        raise ValueError(
            f"ImageReward checkpoint does not match the model: missing {missing[:8]} ({len(missing)} in all), "
            f"unexpected {unexpected[:8]} ({len(unexpected)} in all); expected the released THUDM/ImageReward "
            "state dict (blip.visual_encoder.*, blip.text_encoder.*, mlp.layers.*)"
        )
    wrong_shapes = [
        f"{key}: checkpoint {tuple(value.shape)}, model {tuple(expected[key].shape)}"
        for key, value in converted.items()
        if value.shape != expected[key].shape
    ]
    if wrong_shapes:
        raise ValueError(
            f"ImageReward checkpoint shapes do not fit the architecture of med_config.json / vision_config.json: "
            f"{'; '.join(wrong_shapes[:4])} ({len(wrong_shapes)} in all)"
        )
    return LoadReport(loaded=len(converted), ignored=ignored)


def load_released_state(model: ImageRewardModel, released: dict[str, torch.Tensor]) -> LoadReport:
    """Load a released-style state dict into `model` (built on meta or any device); raise on any mismatch."""
    report = check_released_state(model, released)
    converted, _, _ = convert_state_dict(released)
    model.load_state_dict(converted, strict=True, assign=True)
    # Non-persistent buffers stay where the model was built (meta); rebuild the one the text encoder has.
    embeddings = model.text_encoder.embeddings
    embeddings.position_ids = torch.arange(model.text_encoder.config.max_position_embeddings).expand((1, -1))
    leftovers = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if leftovers:
        raise RuntimeError(f"ImageReward load left tensors uninitialised: {leftovers}")
    return report


@dataclass(frozen=True)
class CheckpointFiles:
    """Local paths of one model: the state dict, the BERT config and (optional) a ViT spec."""

    checkpoint: Path
    med_config: Path
    vision_config: Path | None = None


def resolve_files(source: ModelSource) -> CheckpointFiles:
    """Local files of `source`: its directory's ImageReward.pt + med_config.json, or the hub's (cache only offline)."""
    if source.local:
        folder = Path(source.name_or_path)
        for name in (CHECKPOINT_FILE, MED_CONFIG_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{source.field}={source.name_or_path!r} has no {name}; expected the files of THUDM/ImageReward"
                )
        vision_config = folder / VISION_CONFIG_FILE
        return CheckpointFiles(
            folder / CHECKPOINT_FILE, folder / MED_CONFIG_FILE, vision_config if vision_config.is_file() else None
        )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    def download(name: str) -> Path:
        return Path(
            hf_hub_download(
                source.name_or_path, name, revision=source.revision, local_files_only=source.local_files_only
            )
        )

    paths = []
    for name in (CHECKPOINT_FILE, MED_CONFIG_FILE):
        try:
            paths.append(download(name))
        except Exception as exc:  # hub errors (offline cache miss, 404, network) all mean: no such file here
            raise OSError(
                f"{source.field}={source.name_or_path!r}: cannot get {name} ({where(source)}): {exc}"
            ) from exc
    try:
        vision_config: Path | None = download(VISION_CONFIG_FILE)
    except (EntryNotFoundError, LocalEntryNotFoundError):  # the release has none: its ViT-L is fixed in code
        vision_config = None
    return CheckpointFiles(paths[0], paths[1], vision_config)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; the error names the file."""
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def build_model(files: CheckpointFiles) -> ImageRewardModel:
    """An ImageRewardModel with no storage (meta device), shaped by the config files."""
    vision = VisionSpec.from_dict(read_json(files.vision_config)) if files.vision_config else VIT_LARGE
    text_config = text_config_from_med(read_json(files.med_config), encoder_hidden_size=vision.hidden_size)
    # Built on meta: no seconds spent on random init of ~470M parameters that the checkpoint overwrites.
    with torch.device("meta"):
        return ImageRewardModel(vision, text_config)


def load_model(files: CheckpointFiles) -> tuple[ImageRewardModel, LoadReport]:
    """Build the model from the config files and load the checkpoint into it (CPU, checkpoint dtype, eval mode)."""
    model = build_model(files)
    report = load_released_state(model, load_state_dict_file(files.checkpoint, field=CHECKPOINT_FILE))
    return model.eval(), report
