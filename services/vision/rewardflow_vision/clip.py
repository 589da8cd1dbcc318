"""CLIP image and text embeddings for batches of uint8 images and prompts (shared by the CLIP-based services)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPVisionModelWithProjection
from transformers.utils import logging as hf_logging

from rewardflow_vision.loading import ModelSource, load_pretrained, parse_device, parse_dtype, resolve_source
from rewardflow_vision.preprocess import ImagePreprocess

CLIP_MAX_TOKENS = 77
"""CLIP's text context; longer prompts are truncated (keeping the end-of-text token), as the references do."""


def _sources(model_id: str, processor_id: str | None, revision: str | None) -> tuple[ModelSource, ModelSource]:
    """Model and processor sources; `revision` pins the model repo (and the processor when it is the same repo)."""
    model_source = resolve_source(model_id, revision, field="REWARDFLOW_MODEL")
    if not processor_id or processor_id == model_id:
        return model_source, model_source
    return model_source, resolve_source(processor_id, None, field="REWARDFLOW_PROCESSOR")


@dataclass
class ClipEmbedder:
    """A CLIPModel with its tokenizer and preprocessing; embeddings come back L2-normalised, float32, shape (N, D)."""

    model: CLIPModel
    tokenizer: Any
    preprocess: ImagePreprocess
    device: torch.device
    dtype: torch.dtype
    max_tokens: int = CLIP_MAX_TOKENS

    @classmethod
    def load(
        cls,
        model_id: str,
        *,
        processor_id: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        revision: str | None = None,
    ) -> ClipEmbedder:
        """Load the model from `model_id`, tokenizer and preprocessing from `processor_id` (default: `model_id`)."""
        torch_device = parse_device(device)
        torch_dtype = parse_dtype(dtype, torch_device)
        model_source, processor_source = _sources(model_id, processor_id, revision)
        model = load_pretrained(CLIPModel, model_source, device=torch_device, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(
            processor_source.name_or_path, **processor_source.from_pretrained_kwargs()
        )
        preprocess = ImagePreprocess.from_pretrained(processor_source)
        max_tokens = min(CLIP_MAX_TOKENS, model.config.text_config.max_position_embeddings)
        return cls(model, tokenizer, preprocess, torch_device, torch_dtype, max_tokens)

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale): the temperature CLIP multiplies cosines by (100 for OpenAI CLIP and PickScore)."""
        return float(self.model.logit_scale.detach().float().exp())

    @torch.inference_mode()
    def image_embeddings(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """images: N uint8 (H, W, 3) -> (N, D) unit vectors (the projected pooled vision output)."""
        pixels = self.preprocess(images, device=self.device, dtype=self.dtype)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return _unit(self.model.visual_projection(pooled))

    @torch.inference_mode()
    def text_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """prompts: N strings -> (N, D) unit vectors; each distinct prompt is encoded once (groups repeat prompts)."""
        unique = list(dict.fromkeys(prompts))
        tokens = self.tokenizer(
            unique, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self.device)
        output = self.model.text_model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        embeddings = _unit(self.model.text_projection(output.pooler_output))
        index = {prompt: i for i, prompt in enumerate(unique)}
        return embeddings[torch.tensor([index[p] for p in prompts], device=embeddings.device)]


@dataclass
class ClipImageEmbedder:
    """The vision tower of a CLIP checkpoint only (no text weights in memory); unit float32 embeddings (N, D)."""

    model: CLIPVisionModelWithProjection
    preprocess: ImagePreprocess
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def load(
        cls,
        model_id: str,
        *,
        processor_id: str | None = None,
        device: str = "cpu",
        dtype: str = "auto",
        revision: str | None = None,
    ) -> ClipImageEmbedder:
        """Load the vision tower + projection of the CLIP checkpoint `model_id` and its preprocessing."""
        torch_device = parse_device(device)
        torch_dtype = parse_dtype(dtype, torch_device)
        model_source, processor_source = _sources(model_id, processor_id, revision)
        # A CLIPModel checkpoint keeps projection_dim at the top level; the vision tower needs it in its config.
        config = CLIPConfig.from_pretrained(model_source.name_or_path, **model_source.from_pretrained_kwargs())
        vision_config = config.vision_config
        vision_config.projection_dim = config.projection_dim
        previous = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # the text tower's weights are skipped on purpose: no "unexpected keys" report
        try:
            model = load_pretrained(
                CLIPVisionModelWithProjection,
                model_source,
                device=torch_device,
                dtype=torch_dtype,
                config=vision_config,
            )
        finally:
            hf_logging.set_verbosity(previous)
        return cls(model, ImagePreprocess.from_pretrained(processor_source), torch_device, torch_dtype)

    @property
    def embedding_dim(self) -> int:
        return int(self.model.config.projection_dim)

    @torch.inference_mode()
    def image_embeddings(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """images: N uint8 (H, W, 3) -> (N, D) unit vectors (same values as ClipEmbedder's on the same checkpoint)."""
        pixels = self.preprocess(images, device=self.device, dtype=self.dtype)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return _unit(self.model.visual_projection(pooled))


def _unit(features: torch.Tensor) -> torch.Tensor:
    """(N, D) -> float32 rows of norm 1 (in float32: fp16 norms of 1024-d vectors lose digits)."""
    features = features.float()
    return features / features.norm(dim=-1, keepdim=True)
