"""The ImageReward network on transformers' BLIP modules: ViT → BERT with cross-attention → [CLS] → MLP head.

Architecture and constants follow THUDM/ImageReward's `ImageReward/ImageReward.py` (class `ImageReward`,
method `score`) and its BLIP code (`BLIP_Pretrain(image_size=224, vit="large")`, `create_vit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

REWARD_MEAN = 0.16717362830052426
"""Published mean of the head's raw output (ImageReward.__init__: self.mean); score = (raw - mean) / std."""
REWARD_STD = 1.0333394966054072
"""Published std of the head's raw output (ImageReward.__init__: self.std)."""
TEXT_MAX_LENGTH = 35
"""The released tokenizer call: padding="max_length", truncation=True, max_length=35."""
HEAD_WIDTHS = (1024, 128, 64, 16, 1)
"""The released MLP: Linear(768,1024) Dropout(0.2) Linear(1024,128) Dropout(0.2) Linear(128,64) Dropout(0.1)
Linear(64,16) Linear(16,1), no activations (they are commented out in the source)."""
HEAD_DROPOUTS = (0.2, 0.2, 0.1, None, None)
"""Dropout after each Linear of HEAD_WIDTHS (None: none); identity at inference, kept for the key indices."""


@dataclass(frozen=True)
class VisionSpec:
    """The ViT of BLIP's `create_vit` (timm-style blocks, LayerNorm eps 1e-6, exact GELU, qkv bias)."""

    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    mlp_size: int = 4096
    image_size: int = 224
    patch_size: int = 16

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VisionSpec:
        """A spec from a `vision_config.json`-style dict; unknown keys are an error naming them."""
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"vision_config: unknown keys {sorted(unknown)}; expected some of {sorted(cls.__dataclass_fields__)}"
            )
        return cls(**{key: int(value) for key, value in values.items()})

    def to_config(self) -> BlipVisionConfig:
        return BlipVisionConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.mlp_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            hidden_act="gelu",
            layer_norm_eps=1e-6,  # BLIP's ViT: partial(nn.LayerNorm, eps=1e-6); transformers' default is 1e-5
        )


VIT_LARGE = VisionSpec()
"""The released model's image encoder: BLIP ViT-L/16 at 224 px."""


def text_config_from_med(med_config: dict[str, Any], encoder_hidden_size: int) -> BlipTextConfig:
    """BlipTextConfig for BLIP's med.py BertModel described by `med_config.json`.

    BLIP sets `encoder_width` to the ViT width in code (`encoder_config.encoder_width = vision_width`),
    so the file's value is ignored here too. `is_decoder=True` only makes transformers build the
    cross-attention layers; the forward runs bidirectionally (`is_decoder=False`), like med.py's
    multimodal mode.
    """
    if not med_config.get("add_cross_attention", False):
        raise ValueError(
            f"med_config.json: add_cross_attention={med_config.get('add_cross_attention')!r}; "
            "ImageReward's text encoder needs cross-attention (true)"
        )
    if med_config.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"med_config.json: position_embedding_type={med_config['position_embedding_type']!r}; expected 'absolute'"
        )
    try:
        return BlipTextConfig(
            vocab_size=int(med_config["vocab_size"]),
            hidden_size=int(med_config["hidden_size"]),
            encoder_hidden_size=encoder_hidden_size,
            intermediate_size=int(med_config["intermediate_size"]),
            num_hidden_layers=int(med_config["num_hidden_layers"]),
            num_attention_heads=int(med_config["num_attention_heads"]),
            max_position_embeddings=int(med_config["max_position_embeddings"]),
            hidden_act=str(med_config.get("hidden_act", "gelu")),
            layer_norm_eps=float(med_config.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(med_config.get("pad_token_id", 0)),
            # Generation ids (transformers' defaults are bert-base's) mean nothing to an encoder-only reward.
            bos_token_id=None,
            eos_token_id=None,
            sep_token_id=None,
            is_decoder=True,
        )
    except KeyError as exc:
        raise ValueError(
            f"med_config.json lacks the field {exc.args[0]!r} (BERT config of BLIP's text encoder)"
        ) from exc


class RewardHead(nn.Module):
    """The released 5-layer linear MLP on the [CLS] feature; keys `layers.{0,2,4,6,7}` as in the checkpoint."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        modules: list[nn.Module] = []
        width_in = input_size
        for width, dropout in zip(HEAD_WIDTHS, HEAD_DROPOUTS, strict=True):
            modules.append(nn.Linear(width_in, width))
            if dropout is not None:
                modules.append(nn.Dropout(dropout))
            width_in = width
        self.layers = nn.Sequential(*modules)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class ImageRewardModel(nn.Module):
    """BLIP image encoder + cross-attending text encoder + reward head; keys match BlipForImageTextRetrieval's."""

    def __init__(self, vision: VisionSpec, text_config: BlipTextConfig) -> None:
        super().__init__()
        if text_config.encoder_hidden_size != vision.hidden_size:
            raise ValueError(
                f"text encoder_hidden_size={text_config.encoder_hidden_size} must equal the ViT hidden_size "
                f"{vision.hidden_size} (the cross-attention reads the image states)"
            )
        self.vision = vision
        self.vision_model = BlipVisionModel(vision.to_config())
        self.text_encoder = BlipTextModel(text_config, add_pooling_layer=False)
        self.mlp = RewardHead(text_config.hidden_size)

    def raw_reward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Head output before normalisation: (B,) float32.

        pixel_values: (B, 3, S, S) normalised, in the backbone's dtype; input_ids, attention_mask: (B, L).
        """
        image_embeds = self.vision_model(pixel_values=pixel_values).last_hidden_state
        # The released code passes an all-ones encoder mask; no mask is the same attention.
        text = self.text_encoder(
            input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image_embeds, is_decoder=False
        )
        # As released: the [CLS] feature goes to the head in float32 whatever the backbone's dtype.
        features = text.last_hidden_state[:, 0, :].float()
        return self.mlp(features).squeeze(-1)

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The ImageReward score (raw - mean) / std: (B,) float32."""
        return (self.raw_reward(pixel_values, input_ids, attention_mask) - REWARD_MEAN) / REWARD_STD
