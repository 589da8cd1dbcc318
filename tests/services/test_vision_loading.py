"""rewardflow_vision loading helpers: sources, offline flags, dtype/device parsing, safe weight files, CLIP embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from rewardflow_vision import (
    ClipEmbedder,
    ModelSettings,
    hub_offline,
    hub_unreachable,
    load_state_dict_file,
    parse_device,
    parse_dtype,
    resolve_source,
)
from rewardflow_vision.tiny import write_tiny_clip


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_clip(tmp_path_factory.mktemp("tiny-clip"), seed=0, image_size=32, shortest_edge=40)


def test_local_directory_is_a_local_source(tmp_path: Path) -> None:
    source = resolve_source(str(tmp_path))
    assert source.local and source.local_files_only
    assert source.from_pretrained_kwargs() == {"local_files_only": True}


def test_missing_path_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="REWARDFLOW_PROCESSOR="):
        resolve_source(str(tmp_path / "absent"), field="REWARDFLOW_PROCESSOR")
    with pytest.raises(ValueError, match="REWARDFLOW_MODEL is empty"):
        resolve_source("")


@pytest.mark.parametrize(("value", "offline"), [("1", True), ("true", True), ("0", False), ("", False)])
def test_hub_ids_follow_hf_hub_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, offline: bool
) -> None:
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    snapshot = tmp_path / "models--openai--clip-vit-large-patch14" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("0" * 40)
    assert hub_offline() is offline
    source = resolve_source("openai/clip-vit-large-patch14", revision="main")
    assert not source.local
    # A cached model loads from the cache when offline, and also when the hub does not answer (no retries).
    cache_only = offline or hub_unreachable() is not None
    assert source.from_pretrained_kwargs() == {"local_files_only": cache_only, "revision": "main"}


def test_offline_hub_id_not_in_cache_fails_with_where_it_looked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(OSError, match=r"REWARDFLOW_MODEL='rewardflow-test/absent'.*offline"):
        ClipEmbedder.load("rewardflow-test/absent")


def test_dtype_and_device_parsing() -> None:
    cpu = parse_device("cpu")
    assert parse_dtype("auto", cpu) is torch.float32
    assert parse_dtype("bf16", cpu) is torch.bfloat16
    assert parse_dtype("float16", cpu) is torch.float16
    with pytest.raises(ValueError, match="REWARDFLOW_DTYPE='float8'"):
        parse_dtype("float8", cpu)
    with pytest.raises(ValueError, match="REWARDFLOW_DEVICE='gpu0'"):
        parse_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            parse_device("cuda")


def test_settings_read_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDFLOW_DTYPE", "bfloat16")
    monkeypatch.setenv("REWARDFLOW_PROCESSOR", "/models/proc")
    settings = ModelSettings()
    assert (settings.dtype, settings.processor, settings.revision) == ("bfloat16", "/models/proc", None)


def test_state_dict_files_load_safely(tmp_path: Path) -> None:
    state = {"layers.0.weight": torch.randn(3, 2), "layers.0.bias": torch.randn(3)}
    torch.save(state, tmp_path / "head.pth")
    from safetensors.torch import save_file

    save_file(state, tmp_path / "head.safetensors")
    for name in ("head.pth", "head.safetensors"):
        loaded = load_state_dict_file(tmp_path / name)
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)
    # A pickle holding an arbitrary object is refused, not executed.
    torch.save({"weights": state, "extra": Path("x")}, tmp_path / "object.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_state_dict_file(tmp_path / "object.pth", field="REWARDFLOW_HEAD")
    with pytest.raises(FileNotFoundError, match="REWARDFLOW_HEAD="):
        load_state_dict_file(tmp_path / "absent.pth", field="REWARDFLOW_HEAD")


def test_clip_embedder_matches_clip_model_features(tiny_clip_dir: Path) -> None:
    embedder = ClipEmbedder.load(str(tiny_clip_dir))
    images = np.random.default_rng(0).integers(0, 256, (3, 40, 40, 3), dtype=np.uint8)  # shortest edge: no resize
    prompts = ["a photo of a cat", "a red car", "a photo of a cat"]
    image_embeds = embedder.image_embeddings(images)
    text_embeds = embedder.text_embeddings(prompts)
    assert image_embeds.shape == text_embeds.shape == (3, 16) and image_embeds.dtype == torch.float32
    torch.testing.assert_close(image_embeds.norm(dim=-1), torch.ones(3))
    # Independent path: CLIPModel.forward on processor-made inputs; its logits are exp(scale) * cosine.
    from transformers import CLIPModel, CLIPProcessor

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip_dir)
    inputs = processor(text=prompts, images=list(images), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits_per_image.diagonal()
    ours = embedder.logit_scale * (image_embeds * text_embeds).sum(-1)
    torch.testing.assert_close(ours, logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(text_embeds[0], text_embeds[2]), "a repeated prompt gets the same embedding"


def test_long_prompts_are_truncated_to_77_tokens(tiny_clip_dir: Path) -> None:
    embedder = ClipEmbedder.load(str(tiny_clip_dir))
    long = "a photo of a cat " * 40  # ~200 tokens
    ids = embedder.tokenizer(long, truncation=True, max_length=77)["input_ids"]
    assert len(ids) == 77 and ids[-1] == embedder.tokenizer.eos_token_id
    prefix = embedder.tokenizer.decode(ids[1:-1])
    torch.testing.assert_close(embedder.text_embeddings([long]), embedder.text_embeddings([prefix]))
