"""ImageReward scores equal an independent float64 re-implementation of the released forward, in process and over HTTP.

The reference below reads the RELEASED key names straight from `ImageReward.pt` and re-implements
THUDM/ImageReward's `score()` in plain torch (BLIP vit.py blocks, med.py BERT with cross-attention and
its -10000 additive mask, the 5-Linear head, (raw - mean) / std): it shares no code with the service's
rename map or with transformers' BLIP modules.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from rewardflow_imagereward.scorer import ImageRewardScorer
from rewardflow_imagereward.tiny import tiny_vocab, write_tiny_checkpoint
from rewardflow_kit import Batch
from rewardflow_proto import ScoreRequest
from service_calls import encoded, score
from transformers import BertTokenizer

MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.__init__ in THUDM/ImageReward
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
MODEL_TOLERANCE = 1e-4
"""|score - reference| on identical pixels: float32 service vs float64 reference (scores are O(1))."""
PROMPTS = ["a photo of a cat", "a red cube on a blue sphere", "portrait of a woman at night", "", "zebra", "the city"]


# ---------------------------------------------------------------- the independent reference


def reference_raw(
    released: dict[str, torch.Tensor], folder: Path, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> np.ndarray:
    """THUDM/ImageReward's forward in float64 from released keys: pixels (B, 3, S, S) -> head outputs (B,)."""
    sd = {k: v.double() if v.is_floating_point() else v for k, v in released.items()}
    vision = json.loads((folder / "vision_config.json").read_text())
    med = json.loads((folder / "med_config.json").read_text())
    v = "blip.visual_encoder."
    x = F.conv2d(pixels.double(), sd[v + "patch_embed.proj.weight"], sd[v + "patch_embed.proj.bias"], stride=16)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[v + "cls_token"].expand(x.shape[0], -1, -1), x], dim=1)
    x = x + sd[v + "pos_embed"][:, : x.shape[1]]
    width = x.shape[-1]
    for i in range(vision["num_layers"]):
        b = f"{v}blocks.{i}."
        h = F.layer_norm(x, (width,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-6)
        x = x + vit_attention(h, sd, b + "attn.", vision["num_heads"])
        h = F.layer_norm(x, (width,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-6)
        h = F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]))
        x = x + F.linear(h, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
    image_embeds = F.layer_norm(x, (width,), sd[v + "norm.weight"], sd[v + "norm.bias"], 1e-6)

    t, eps, heads = "blip.text_encoder.", med["layer_norm_eps"], med["num_attention_heads"]
    hidden = med["hidden_size"]
    x = (
        sd[t + "embeddings.word_embeddings.weight"][ids]
        + sd[t + "embeddings.position_embeddings.weight"][: ids.shape[1]]
    )
    x = F.layer_norm(x, (hidden,), sd[t + "embeddings.LayerNorm.weight"], sd[t + "embeddings.LayerNorm.bias"], eps)
    additive = (1.0 - mask[:, None, None, :].double()) * -10000.0  # med.py get_extended_attention_mask
    for i in range(med["num_hidden_layers"]):
        layer = f"{t}encoder.layer.{i}."
        x = bert_attention(x, x, sd, layer + "attention.", heads, additive, eps)
        x = bert_attention(x, image_embeds, sd, layer + "crossattention.", heads, None, eps)
        h = F.gelu(F.linear(x, sd[layer + "intermediate.dense.weight"], sd[layer + "intermediate.dense.bias"]))
        h = F.linear(h, sd[layer + "output.dense.weight"], sd[layer + "output.dense.bias"])
        x = F.layer_norm(
            h + x, (hidden,), sd[layer + "output.LayerNorm.weight"], sd[layer + "output.LayerNorm.bias"], eps
        )
    features = x[:, 0, :]
    for index in (0, 2, 4, 6, 7):  # Linear layers of the Sequential; 1, 3, 5 are Dropout
        features = F.linear(features, sd[f"mlp.layers.{index}.weight"], sd[f"mlp.layers.{index}.bias"])
    return features[:, 0].numpy()


def vit_attention(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str, heads: int) -> torch.Tensor:
    batch, tokens, width = x.shape
    qkv = F.linear(x, sd[prefix + "qkv.weight"], sd[prefix + "qkv.bias"])
    q, k, v = qkv.reshape(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
    attention = ((q @ k.transpose(-2, -1)) * (width // heads) ** -0.5).softmax(dim=-1)
    out = (attention @ v).transpose(1, 2).reshape(batch, tokens, width)
    return F.linear(out, sd[prefix + "proj.weight"], sd[prefix + "proj.bias"])


def bert_attention(
    x: torch.Tensor,
    context: torch.Tensor,
    sd: dict[str, torch.Tensor],
    prefix: str,
    heads: int,
    additive: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    def split(y: torch.Tensor) -> torch.Tensor:
        return y.reshape(y.shape[0], y.shape[1], heads, -1).transpose(1, 2)

    q = split(F.linear(x, sd[prefix + "self.query.weight"], sd[prefix + "self.query.bias"]))
    k = split(F.linear(context, sd[prefix + "self.key.weight"], sd[prefix + "self.key.bias"]))
    v = split(F.linear(context, sd[prefix + "self.value.weight"], sd[prefix + "self.value.bias"]))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if additive is not None:
        scores = scores + additive
    out = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(x.shape)
    out = F.linear(out, sd[prefix + "output.dense.weight"], sd[prefix + "output.dense.bias"])
    return F.layer_norm(
        out + x, (x.shape[-1],), sd[prefix + "output.LayerNorm.weight"], sd[prefix + "output.LayerNorm.bias"], eps
    )


def released_tokenizer(folder: Path) -> BertTokenizer:
    """THUDM/ImageReward's init_tokenizer() on the tiny vocabulary (not the service's loader)."""
    tokens = (folder / "vocab.txt").read_text().splitlines()
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(tokens)})
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tokenizer


def pixels_224(images: np.ndarray) -> torch.Tensor:
    """ToTensor + Normalize of 224x224 uint8 images (no resize or crop is needed at the model's size)."""
    x = images.astype(np.float64) / 255.0
    return torch.from_numpy(((x - CLIP_MEAN) / CLIP_STD).transpose(0, 3, 1, 2).copy())


def released_transform(image: np.ndarray) -> torch.Tensor:
    """The released torchvision transform on PIL: Resize(224, BICUBIC) shorter side, CenterCrop(224), normalise."""
    height, width = image.shape[:2]
    short, long = min(height, width), max(height, width)
    new_long = int(224 * long / short)
    size = (new_long, 224) if width <= height else (224, new_long)  # (h, w)
    pil = Image.fromarray(image)
    if size != (height, width):
        pil = pil.resize((size[1], size[0]), Image.BICUBIC)
    top, left = round((size[0] - 224) / 2.0), round((size[1] - 224) / 2.0)  # torchvision's crop offsets
    array = np.asarray(pil.crop((left, top, left + 224, top + 224)))
    return pixels_224(array[None])[0]


def reference_scores(folder: Path, pixels: torch.Tensor, prompts: list[str]) -> np.ndarray:
    released = torch.load(folder / "ImageReward.pt", weights_only=True)
    tokens = released_tokenizer(folder)(
        prompts, padding="max_length", truncation=True, max_length=35, return_tensors="pt"
    )
    raw = reference_raw(released, folder, pixels, tokens["input_ids"], tokens["attention_mask"])
    return (raw - MEAN) / STD


def images_224(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("imagereward") / "model", seed=5)


@pytest.fixture(scope="module")
def scorer(tiny_dir: Path) -> ImageRewardScorer:
    scorer = ImageRewardScorer()
    scorer.model_id, scorer.device = str(tiny_dir), "cpu"
    scorer.load()
    return scorer


def scores_of(scorer: ImageRewardScorer, images: list[np.ndarray] | np.ndarray, prompts: list[str]) -> np.ndarray:
    items = scorer.score(Batch(images=list(images), prompts=prompts, metadata=[{}] * len(prompts)))
    return np.array([item.scores["score"] for item in items])


# ---------------------------------------------------------------- tests


def test_tokenizer_follows_the_released_recipe(scorer: ImageRewardScorer, tiny_dir: Path) -> None:
    vocab = tiny_vocab()
    ids = scorer._tokenizer("a photo of a cat", padding="max_length", truncation=True, max_length=35)["input_ids"]
    words = [vocab.index(w) for w in ("a", "photo", "of", "a", "cat")]
    assert ids == [vocab.index("[CLS]"), *words, vocab.index("[SEP]")] + [vocab.index("[PAD]")] * 28
    assert scorer._tokenizer.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(vocab), len(vocab) + 1]
    long_ids = scorer._tokenizer(" ".join(["cat"] * 50), truncation=True, max_length=35)["input_ids"]
    assert len(long_ids) == 35 and long_ids[-1] == vocab.index("[SEP]")
    assert ids == released_tokenizer(tiny_dir)("a photo of a cat", padding="max_length", max_length=35)["input_ids"]


def test_model_equals_reference_on_identical_pixels(scorer: ImageRewardScorer, tiny_dir: Path) -> None:
    pixels = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    tokens = released_tokenizer(tiny_dir)(PROMPTS[:4], padding="max_length", max_length=35, return_tensors="pt")
    with torch.inference_mode():
        ours = scorer._model(pixels, tokens["input_ids"], tokens["attention_mask"]).double().numpy()
    expected = reference_scores(tiny_dir, pixels, PROMPTS[:4])
    np.testing.assert_allclose(ours, expected, rtol=0, atol=MODEL_TOLERANCE)
    assert np.ptp(expected) > 0.05, "a degenerate tiny model would make this comparison vacuous"


def test_scorer_equals_reference_for_model_size_images(scorer: ImageRewardScorer, tiny_dir: Path) -> None:
    images = images_224(6, seed=2)
    expected = reference_scores(tiny_dir, pixels_224(images), PROMPTS)
    np.testing.assert_allclose(scores_of(scorer, images, PROMPTS), expected, rtol=0, atol=MODEL_TOLERANCE)
    items = scorer.score(Batch(images=list(images[:1]), prompts=PROMPTS[:1], metadata=[{}]))
    assert items[0].scores["score"] == pytest.approx((items[0].scores["raw"] - MEAN) / STD, abs=1e-12)


def test_batched_scores_equal_one_at_a_time(scorer: ImageRewardScorer) -> None:
    rng = np.random.default_rng(3)
    images = [
        rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(512, 512, 3)] * 3 + [(300, 433, 3), (224, 224, 3)]
    ]
    together = scores_of(scorer, images, PROMPTS[:5])
    alone = np.array([scores_of(scorer, [image], [prompt])[0] for image, prompt in zip(images, PROMPTS, strict=False)])
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_scores_depend_on_both_image_and_prompt(scorer: ImageRewardScorer) -> None:
    images = images_224(2, seed=4)
    by_image = scores_of(scorer, images, ["a photo of a cat"] * 2)
    by_prompt = scores_of(scorer, [images[0]] * 2, ["a photo of a cat", "a blue house"])
    assert abs(by_image[0] - by_image[1]) > 1e-3
    assert abs(by_prompt[0] - by_prompt[1]) > 1e-3


@pytest.mark.parametrize(
    ("shape", "max_grey_levels"),
    [
        ((512, 512, 3), 1),  # the training case
        ((300, 433, 3), 1),  # resized long side 323: 323 - 224 = 99, where round and floor offsets differ
        ((433, 300, 3), 1),
        ((224, 300, 3), 0),  # no resize, crop only
        ((100, 150, 3), 2),  # upsampling
    ],
)
def test_preprocessing_matches_the_released_pil_transform(
    scorer: ImageRewardScorer, tiny_dir: Path, shape: tuple[int, int, int], max_grey_levels: int
) -> None:
    # Noise is the hard case for resizing (bicubic overshoot is clipped between PIL's two uint8 passes).
    images = list(np.random.default_rng(sum(shape)).integers(0, 256, (2, *shape), dtype=np.uint8))
    ours = scorer._preprocess(images)
    expected = torch.stack([released_transform(image) for image in images]).float()
    grey_levels = ((ours - expected) * torch.tensor(CLIP_STD).view(1, 3, 1, 1).float() * 255).abs()
    assert grey_levels.max() <= max_grey_levels + 1e-3
    assert grey_levels.mean() < 0.01  # almost every value is exact
    np.testing.assert_allclose(
        scores_of(scorer, images, PROMPTS[:2]), reference_scores(tiny_dir, expected, PROMPTS[:2]), rtol=0, atol=0.01
    )


def test_reduced_precision_follows_the_dtype_setting(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REWARDFLOW_DTYPE", "bfloat16")
    scorer = ImageRewardScorer()
    scorer.model_id, scorer.device = str(tiny_dir), "cpu"
    scorer.load()
    assert scorer._model.vision_model.embeddings.patch_embedding.weight.dtype == torch.bfloat16
    assert scorer._model.mlp.layers[0].weight.dtype == torch.float32  # the head stays float32, as released
    images = images_224(3, seed=6)
    expected = reference_scores(tiny_dir, pixels_224(images), PROMPTS[:3])
    np.testing.assert_allclose(scores_of(scorer, images, PROMPTS[:3]), expected, rtol=0, atol=0.15)


# ---------------------------------------------------------------- the service as a real process


@pytest.fixture(scope="module")
def service_url(module_service_process: Callable, tiny_dir: Path) -> str:
    env = {"REWARDFLOW_MODEL": str(tiny_dir), "REWARDFLOW_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    return module_service_process("imagereward", env=env, timeout_s=120).url


def test_service_scores_over_http_equal_the_reference(service_url: str, tiny_dir: Path) -> None:
    images = images_224(6, seed=7)
    response = score(service_url, ScoreRequest(images=images, prompts=PROMPTS, id="ir-1"))
    assert response.errors == [None] * 6
    assert (response.id, response.service, response.model) == ("ir-1", "imagereward", str(tiny_dir))
    expected = reference_scores(tiny_dir, pixels_224(images), PROMPTS)
    np.testing.assert_allclose(response.scores["score"], expected, rtol=0, atol=MODEL_TOLERANCE)
    np.testing.assert_allclose(response.scores["raw"], expected * STD + MEAN, rtol=0, atol=MODEL_TOLERANCE)


def test_service_decodes_png_and_reports_its_info(service_url: str, tiny_dir: Path) -> None:
    import httpx

    images = images_224(2, seed=8)
    response = score(service_url, ScoreRequest(images=[encoded(im, "png") for im in images], prompts=PROMPTS[:2]))
    expected = reference_scores(tiny_dir, pixels_224(images), PROMPTS[:2])
    np.testing.assert_allclose(response.scores["score"], expected, rtol=0, atol=MODEL_TOLERANCE)
    info = httpx.get(service_url + "/v1/info", timeout=10).json()
    assert info["name"] == "imagereward" and info["score_keys"] == ["score", "raw"]
    assert (info["model"], info["device"], info["max_batch_size"]) == (str(tiny_dir), "cpu", 64)


def test_hub_id_loads_offline_from_the_cache(service_process: Callable, tiny_dir: Path, tmp_path: Path) -> None:
    from test_imagereward_checkpoint import fake_hub_snapshot

    cache = tmp_path / "hub"
    fake_hub_snapshot(cache, "THUDM/ImageReward", tiny_dir, ["ImageReward.pt", "med_config.json", "vision_config.json"])
    fake_hub_snapshot(cache, "bert-base-uncased", tiny_dir, ["vocab.txt", "tokenizer_config.json"])
    env = {"REWARDFLOW_MODEL": "THUDM/ImageReward", "REWARDFLOW_DEVICE": "cpu", "HF_HUB_OFFLINE": "1"}
    service = service_process("imagereward", env={**env, "HF_HUB_CACHE": str(cache)}, timeout_s=120)
    images = images_224(2, seed=9)
    response = score(service.url, ScoreRequest(images=images, prompts=PROMPTS[:2]))
    expected = reference_scores(tiny_dir, pixels_224(images), PROMPTS[:2])
    np.testing.assert_allclose(response.scores["score"], expected, rtol=0, atol=MODEL_TOLERANCE)


def test_a_model_folder_without_weights_stays_unready_with_the_reason(
    service_process: Callable, tmp_path: Path
) -> None:
    import httpx

    folder = write_tiny_checkpoint(tmp_path / "model")
    (folder / "ImageReward.pt").unlink()
    env = {"REWARDFLOW_MODEL": str(folder), "REWARDFLOW_DEVICE": "cpu", "REWARDFLOW_STAY_UP_ON_LOAD_ERROR": "true"}
    service = service_process("imagereward", env=env, wait="/healthz", timeout_s=120)
    deadline = time.monotonic() + 120
    while httpx.get(service.url + "/readyz", timeout=5).json()["status"] == "loading":
        assert time.monotonic() < deadline, "load() neither finished nor failed"
        time.sleep(0.2)
    reply = httpx.get(service.url + "/readyz", timeout=5)
    assert reply.status_code == 503 and reply.json()["status"] == "failed"
    assert f"REWARDFLOW_MODEL='{folder}' has no ImageReward.pt" in reply.json()["error"]
    assert service.alive()
