"""ImageReward checkpoint mapping: released key names ↔ transformers' BLIP modules, strict loading, file lookup."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from rewardflow_imagereward.checkpoint import (
    UNUSED_RELEASED_KEYS,
    build_model,
    check_released_state,
    load_model,
    load_released_state,
    resolve_files,
    to_model_key,
    to_released_key,
)
from rewardflow_imagereward.model import VIT_LARGE, ImageRewardModel, text_config_from_med
from rewardflow_imagereward.tiny import TINY_VISION, released_state_dict, tiny_med_config, write_tiny_checkpoint
from rewardflow_vision import resolve_source

# Released names written out by hand from THUDM/ImageReward's modules (ImageReward: self.blip, self.mlp;
# BLIP_Pretrain: visual_encoder, text_encoder, vision_proj, text_proj; BLIP vit.py: cls_token, pos_embed,
# patch_embed.proj, blocks[i].{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm; med.py BertModel:
# embeddings.{word_embeddings, position_embeddings, LayerNorm}, encoder.layer[i].{attention, crossattention,
# intermediate, output}) — independent of the rename map under test.
RELEASED_TO_TRANSFORMERS = {
    "blip.visual_encoder.cls_token": "vision_model.embeddings.class_embedding",
    "blip.visual_encoder.pos_embed": "vision_model.embeddings.position_embedding",
    "blip.visual_encoder.patch_embed.proj.weight": "vision_model.embeddings.patch_embedding.weight",
    "blip.visual_encoder.patch_embed.proj.bias": "vision_model.embeddings.patch_embedding.bias",
    "blip.visual_encoder.blocks.0.norm1.weight": "vision_model.encoder.layers.0.layer_norm1.weight",
    "blip.visual_encoder.blocks.0.attn.qkv.weight": "vision_model.encoder.layers.0.self_attn.qkv.weight",
    "blip.visual_encoder.blocks.0.attn.qkv.bias": "vision_model.encoder.layers.0.self_attn.qkv.bias",
    "blip.visual_encoder.blocks.0.attn.proj.weight": "vision_model.encoder.layers.0.self_attn.projection.weight",
    "blip.visual_encoder.blocks.1.norm2.bias": "vision_model.encoder.layers.1.layer_norm2.bias",
    "blip.visual_encoder.blocks.1.mlp.fc1.weight": "vision_model.encoder.layers.1.mlp.fc1.weight",
    "blip.visual_encoder.blocks.1.mlp.fc2.bias": "vision_model.encoder.layers.1.mlp.fc2.bias",
    "blip.visual_encoder.norm.weight": "vision_model.post_layernorm.weight",
    "blip.visual_encoder.norm.bias": "vision_model.post_layernorm.bias",
    "mlp.layers.0.weight": "mlp.layers.0.weight",
    "mlp.layers.2.bias": "mlp.layers.2.bias",
    "mlp.layers.4.weight": "mlp.layers.4.weight",
    "mlp.layers.6.weight": "mlp.layers.6.weight",
    "mlp.layers.7.bias": "mlp.layers.7.bias",
}  # fmt: skip
# med.py's BertModel and transformers' BlipTextModel share their names: the released key is "blip." + ours.
TEXT_KEYS = (
    "text_encoder.embeddings.word_embeddings.weight",
    "text_encoder.embeddings.position_embeddings.weight",
    "text_encoder.embeddings.LayerNorm.weight",
    "text_encoder.encoder.layer.0.attention.self.query.weight",
    "text_encoder.encoder.layer.0.attention.output.LayerNorm.bias",
    "text_encoder.encoder.layer.1.crossattention.self.key.weight",
    "text_encoder.encoder.layer.1.crossattention.self.value.bias",
    "text_encoder.encoder.layer.1.intermediate.dense.weight",
    "text_encoder.encoder.layer.1.output.LayerNorm.weight",
)
RELEASED_TO_TRANSFORMERS.update({"blip." + key: key for key in TEXT_KEYS})


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("imagereward") / "model", seed=3)


def test_hand_listed_released_keys_map_to_the_transformers_names() -> None:
    for released, expected in RELEASED_TO_TRANSFORMERS.items():
        assert to_model_key(released) == expected, released
        assert to_released_key(expected) == released, expected


def test_hand_listed_keys_exist_in_the_real_sized_model() -> None:
    model = build_model_like_release()
    keys = set(model.state_dict())
    assert set(RELEASED_TO_TRANSFORMERS.values()) <= keys
    assert "vision_model.encoder.layers.23.self_attn.projection.weight" in keys  # ViT-L: 24 blocks
    assert "vision_model.encoder.layers.24.layer_norm1.weight" not in keys


def build_model_like_release() -> ImageRewardModel:
    """The released architecture (ViT-L + BERT-base with BLIP's vocabulary) on meta: shapes only, no memory."""
    med = {**tiny_med_config(30524), "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12}
    med.update({"num_hidden_layers": 12, "max_position_embeddings": 512})
    with torch.device("meta"):
        return ImageRewardModel(VIT_LARGE, text_config_from_med(med, VIT_LARGE.hidden_size))


def test_real_sized_released_layout_loads_with_no_missing_or_unexpected_keys() -> None:
    model = build_model_like_release()
    released = {to_released_key(k): torch.empty(v.shape, device="meta") for k, v in model.state_dict().items()}
    assert None not in released
    released.update({key: torch.empty(1, device="meta") for key in UNUSED_RELEASED_KEYS})
    # The exact shapes named in the issue: ViT-L/16 at 224, text vocab 30524, cross-attention reads 1024.
    assert released["blip.visual_encoder.pos_embed"].shape == (1, 197, 1024)
    assert released["blip.visual_encoder.patch_embed.proj.weight"].shape == (1024, 3, 16, 16)
    assert released["blip.visual_encoder.blocks.0.mlp.fc1.weight"].shape == (4096, 1024)
    assert released["blip.text_encoder.embeddings.word_embeddings.weight"].shape == (30524, 768)
    assert released["blip.text_encoder.encoder.layer.11.crossattention.self.key.weight"].shape == (768, 1024)
    assert released["mlp.layers.0.weight"].shape == (1024, 768)
    assert released["mlp.layers.7.weight"].shape == (1, 16)
    assert len(released) == len(model.state_dict()) + len(UNUSED_RELEASED_KEYS)
    report = check_released_state(model, released)  # the key and shape checks of the real loading path
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == sorted(UNUSED_RELEASED_KEYS)
    assert report.loaded == len(model.state_dict())


def test_tiny_checkpoint_loads_through_the_real_path_strictly(tiny_dir: Path) -> None:
    files = resolve_files(resolve_source(str(tiny_dir)))
    model, report = load_model(files)
    released = torch.load(tiny_dir / "ImageReward.pt", weights_only=True)
    assert report.missing == [] and report.unexpected == []
    assert report.ignored == sorted(UNUSED_RELEASED_KEYS)
    assert report.loaded == len(model.state_dict()) == len(released) - len(UNUSED_RELEASED_KEYS)
    state = model.state_dict()
    for released_key, model_key in RELEASED_TO_TRANSFORMERS.items():
        assert torch.equal(state[model_key], released[released_key]), released_key
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert torch.equal(model.text_encoder.embeddings.position_ids[0, :5], torch.arange(5))


def test_renamed_or_missing_released_key_is_an_error_naming_it(tiny_dir: Path) -> None:
    released = torch.load(tiny_dir / "ImageReward.pt", weights_only=True)
    files = resolve_files(resolve_source(str(tiny_dir)))
    broken = dict(released)
    broken["blip.visual_encoder.blocks.0.attn.qkv_typo.weight"] = broken.pop(
        "blip.visual_encoder.blocks.0.attn.qkv.weight"
    )
    with pytest.raises(ValueError, match=r"missing \['vision_model.encoder.layers.0.self_attn.qkv.weight'\]") as info:
        load_released_state(build_model(files), broken)
    assert "blip.visual_encoder.blocks.0.attn.qkv_typo.weight" in str(info.value)
    dropped = {k: v for k, v in released.items() if not k.startswith("mlp.layers.7")}
    with pytest.raises(ValueError, match=r"mlp.layers.7.bias"):
        load_released_state(build_model(files), dropped)


def test_weights_of_the_wrong_shape_name_the_config(tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / "model")
    med = json.loads((folder / "med_config.json").read_text())
    (folder / "med_config.json").write_text(json.dumps({**med, "intermediate_size": 48}))
    with pytest.raises(ValueError, match="shapes do not fit"):
        load_model(resolve_files(resolve_source(str(folder))))


def test_a_pickled_object_is_refused_not_unpickled(tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / "model")
    torch.save({"weights": torch.zeros(1), "payload": Path("/etc/passwd")}, folder / "ImageReward.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_model(resolve_files(resolve_source(str(folder))))


def test_missing_files_and_bad_configs_are_errors_a_person_can_act_on(tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / "model")
    (folder / "med_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no med_config\.json"):
        resolve_files(resolve_source(str(folder)))
    folder = write_tiny_checkpoint(tmp_path / "model2")
    med = json.loads((folder / "med_config.json").read_text())
    (folder / "med_config.json").write_text(json.dumps({**med, "add_cross_attention": False}))
    with pytest.raises(ValueError, match="add_cross_attention=False"):
        load_model(resolve_files(resolve_source(str(folder))))
    (folder / "vision_config.json").write_text(json.dumps({"hidden": 32}))
    with pytest.raises(ValueError, match=r"unknown keys \['hidden'\]"):
        load_model(resolve_files(resolve_source(str(folder))))


def test_without_vision_config_the_released_vit_large_is_assumed(tmp_path: Path) -> None:
    folder = write_tiny_checkpoint(tmp_path / "model")
    (folder / "vision_config.json").unlink()
    files = resolve_files(resolve_source(str(folder)))
    assert files.vision_config is None
    assert build_model(files).vision == VIT_LARGE
    with pytest.raises(ValueError, match=r"missing \['vision_model\.encoder\.layers\.10\."):  # 2 blocks, not 24
        load_model(files)


def test_hub_id_offline_reads_the_cache_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model_dir = write_tiny_checkpoint(tmp_path / "model")
    cache = tmp_path / "hub"
    fake_hub_snapshot(cache, "THUDM/ImageReward", model_dir, ["ImageReward.pt", "med_config.json"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    source = resolve_source("THUDM/ImageReward")
    assert source.local_files_only and not source.local
    files = resolve_files(source)
    assert files.checkpoint.read_bytes() == (model_dir / "ImageReward.pt").read_bytes()
    with pytest.raises(OSError, match=r"REWARDFLOW_MODEL='THUDM/NotCached'.*offline"):
        resolve_files(resolve_source("THUDM/NotCached"))


def fake_hub_snapshot(cache: Path, repo_id: str, source_dir: Path, names: list[str]) -> Path:
    """A Hugging Face cache entry (refs/main -> snapshots/<commit>/files) as hf_hub_download leaves it."""
    commit = "0" * 40
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in names:
        shutil.copy(source_dir / name, snapshot / name)
    return snapshot


def test_released_state_dict_of_tiny_model_round_trips_through_the_rename_map() -> None:
    torch.manual_seed(0)
    med = tiny_med_config(60)
    model = ImageRewardModel(TINY_VISION, text_config_from_med(med, TINY_VISION.hidden_size))
    released = released_state_dict(model, torch.Generator().manual_seed(0))
    assert all(
        key.startswith(
            ("blip.visual_encoder.", "blip.text_encoder.", "blip.vision_proj", "blip.text_proj", "mlp.layers.")
        )
        for key in released
    )
    assert {to_model_key(k) for k in released if k not in UNUSED_RELEASED_KEYS} == set(model.state_dict())
