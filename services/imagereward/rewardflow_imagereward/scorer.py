"""ImageRewardScorer: the kit's scorer for ImageReward (normalised preference score per prompt and image)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from rewardflow_kit import Batch, ItemScore
from rewardflow_kit.hub import RequiredModel, is_hub_id
from rewardflow_vision import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ImagePreprocess,
    ModelSettings,
    parse_device,
    parse_dtype,
    resolve_source,
)
from transformers import PreTrainedTokenizerBase

from rewardflow_imagereward.checkpoint import CHECKPOINT_FILE, MED_CONFIG_FILE, LoadReport, load_model, resolve_files
from rewardflow_imagereward.model import REWARD_MEAN, REWARD_STD, ImageRewardModel
from rewardflow_imagereward.tokenizer import RELEASED_TOKENIZER, load_tokenizer, tokenize, tokenizer_source

log = logging.getLogger("rewardflow_imagereward")


def released_preprocess(image_size: int) -> ImagePreprocess:
    """The released `_transform(224)`: Resize(224, bicubic) on the shorter side, CenterCrop(224), CLIP mean/std."""
    return ImagePreprocess(
        shortest_edge=image_size,
        crop_size=(image_size, image_size),
        resample="bicubic",
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        crop_rounding="round",  # torchvision's CenterCrop offset, round((H - 224) / 2)
    )


class ImageRewardScorer:
    """Scores "score" = (raw - 0.16717) / 1.03334 (primary) and "raw" (the head's output) per prompt and image."""

    name = "imagereward"
    version = "1.0.0"
    model_id = "THUDM/ImageReward"
    score_keys = ("score", "raw")
    score_range: ClassVar[dict[str, tuple[float | None, float | None]]] = {"score": (None, None), "raw": (None, None)}
    max_batch_size = 64

    def __init__(self) -> None:
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._model: ImageRewardModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._preprocess: ImagePreprocess | None = None
        self._torch_device = torch.device("cpu")
        self._dtype = torch.float32
        self.load_report: LoadReport | None = None

    def load(self) -> None:
        """Checkpoint (REWARDFLOW_MODEL), tokenizer (REWARDFLOW_PROCESSOR), on REWARDFLOW_DEVICE in REWARDFLOW_DTYPE."""
        settings = ModelSettings()
        self._torch_device = parse_device(self.device)
        self._dtype = parse_dtype(settings.dtype, self._torch_device)
        source = resolve_source(self.model_id, settings.revision)
        model, self.load_report = load_model(resolve_files(source))
        log.info(
            "loaded %d tensors from %s; ignored (unused by the reward): %s",
            self.load_report.loaded,
            self.model_id,
            ", ".join(self.load_report.ignored) or "none",
        )
        model = model.to(device=self._torch_device, dtype=self._dtype).requires_grad_(False)
        model.mlp.float()  # the released head runs in float32 on a float32 [CLS] feature
        self._tokenizer = load_tokenizer(
            tokenizer_source(settings.processor, source, settings.revision), model.text_encoder.config.vocab_size
        )
        self._preprocess = released_preprocess(model.vision.image_size)
        self._model = model

    def required_models(self) -> list[RequiredModel]:
        """The released checkpoint (ImageReward.pt, a state dict read without unpickling code, + med_config.json)
        and the BERT tokenizer the released code loads (REWARDFLOW_PROCESSOR, or a local model folder's own)."""
        settings = ModelSettings()
        models = []
        if is_hub_id(self.model_id):
            files = (CHECKPOINT_FILE, MED_CONFIG_FILE)
            models.append(RequiredModel(self.model_id, files, optional=("*.json",), revision=settings.revision))
        local = None if is_hub_id(self.model_id) else Path(self.model_id)
        own_tokenizer = local is not None and any((local / name).is_file() for name in ("tokenizer.json", "vocab.txt"))
        tokenizer = settings.processor or (None if own_tokenizer else RELEASED_TOKENIZER)
        if is_hub_id(tokenizer):
            optional = ("tokenizer_config.json", "tokenizer.json", "config.json")
            models.append(RequiredModel(tokenizer, ("vocab.txt",), optional, None, "tokenizer", "REWARDFLOW_PROCESSOR"))
        return models

    def warmup_batch(self) -> Batch:
        """Two 512x512 images (the usual training size) so the first request pays no resize/kernel set-up."""
        images = [np.full((512, 512, 3), value, dtype=np.uint8) for value in (64, 192)]
        return Batch(
            images=images, prompts=["a photo of a cat", "a red cube"], metadata=[{}, {}], group_ids=[None, None]
        )

    @torch.inference_mode()
    def raw_scores(self, images: list[np.ndarray], prompts: list[str]) -> np.ndarray:
        """The head's outputs for N (image, prompt) pairs: (N,) float64."""
        if self._model is None or self._tokenizer is None or self._preprocess is None:
            raise RuntimeError("ImageRewardScorer.score called before load()")
        pixels = self._preprocess(images, device=self._torch_device, dtype=self._dtype)
        input_ids, attention_mask = tokenize(self._tokenizer, prompts, self._torch_device)
        raw = self._model.raw_reward(pixels, input_ids, attention_mask)
        return raw.double().cpu().numpy()

    def score(self, batch: Batch) -> list[ItemScore]:
        raw = self.raw_scores(batch.images, batch.prompts)
        normalised = (raw - REWARD_MEAN) / REWARD_STD
        return [ItemScore({"score": float(s), "raw": float(r)}) for s, r in zip(normalised, raw, strict=True)]
