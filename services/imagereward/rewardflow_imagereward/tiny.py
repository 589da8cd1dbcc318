"""Tiny random ImageReward checkpoints in the released layout, written to a directory (tests and benches; no download).

The folder holds what `REWARDFLOW_MODEL=<folder>` reads: `ImageReward.pt` (released key names, produced
by inverting the rename map, plus the unused projections and buffer the release carries),
`med_config.json` (a BERT config like the released one), `vision_config.json` (the tiny ViT) and a
WordPiece `vocab.txt` written by code.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from rewardflow_imagereward.checkpoint import (
    CHECKPOINT_FILE,
    MED_CONFIG_FILE,
    VISION_CONFIG_FILE,
    to_released_key,
)
from rewardflow_imagereward.model import VIT_LARGE, ImageRewardModel, VisionSpec, text_config_from_med

TINY_VISION = VisionSpec(hidden_size=32, num_layers=2, num_heads=2, mlp_size=64, image_size=224, patch_size=16)
"""Same geometry as the release (224 px, patch 16, 197 tokens), far narrower and shallower."""
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TINY_WORDS = (
    "a", "an", "the", "of", "on", "in", "with", "and", "photo", "painting", "cat", "dog", "red", "blue", "green",
    "cube", "sphere", "house", "tree", "sky", "city", "night", "sunset", "portrait", "woman", "man", "car",
)  # fmt: skip
WORDPIECES = tuple(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz") + tuple("abcdefghijklmnopqrstuvwxyz")


def tiny_vocab() -> list[str]:
    """WordPiece vocabulary: BERT's special tokens, some words, and letters so that any word tokenizes."""
    vocab = list(SPECIAL_TOKENS)
    for token in (*TINY_WORDS, *WORDPIECES):
        if token not in vocab:
            vocab.append(token)
    return vocab


def tiny_med_config(vocab_size: int) -> dict[str, Any]:
    """A med_config.json like the released one (BERT keys, encoder_width, add_cross_attention), tiny sizes."""
    return {
        "architectures": ["BertModel"],
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": 32,
        "initializer_range": 0.02,
        "intermediate_size": 64,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 64,
        "model_type": "bert",
        "num_attention_heads": 2,
        "num_hidden_layers": 2,
        "pad_token_id": 0,
        "type_vocab_size": 2,
        "vocab_size": vocab_size,
        "encoder_width": 768,
        "add_cross_attention": True,
    }


def released_med_config() -> dict[str, Any]:
    """BLIP's med_config.json as THUDM/ImageReward ships it: BERT-base, vocabulary 30524 (+[DEC], [ENC])."""
    sizes = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12}
    return {**tiny_med_config(30524), **sizes, "max_position_embeddings": 512}


def randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Weights of order one everywhere (default inits leave the tiny ViT near zero and every score equal)."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("weight") and ("norm" in name.lower()):
                param.copy_(1 + 0.1 * torch.randn(param.shape, generator=generator))
            elif param.ndim >= 2 and "embedding" not in name.split(".")[-1]:
                fan_in = math.prod(param.shape[1:])
                param.copy_(torch.randn(param.shape, generator=generator) / math.sqrt(fan_in))
            elif "embedding" in name:
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))
            else:
                param.copy_(0.1 * torch.randn(param.shape, generator=generator))


def released_state_dict(model: ImageRewardModel, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """`model`'s weights under the released key names, with the keys the release carries but the reward ignores."""
    released = {}
    for key, value in model.state_dict().items():
        released_key = to_released_key(key)
        if released_key is None:
            raise KeyError(f"no released name for model key {key!r}: the rename map is incomplete")
        released[released_key] = value.clone()
    vision_width, text_width = model.vision.hidden_size, model.text_encoder.config.hidden_size
    released["blip.vision_proj.weight"] = torch.randn((256, vision_width), generator=generator)
    released["blip.vision_proj.bias"] = torch.zeros(256)
    released["blip.text_proj.weight"] = torch.randn((256, text_width), generator=generator)
    released["blip.text_proj.bias"] = torch.zeros(256)
    max_positions = model.text_encoder.config.max_position_embeddings
    released["blip.text_encoder.embeddings.position_ids"] = torch.arange(max_positions).expand((1, -1)).clone()
    return released


def write_tiny_checkpoint(
    folder: Path, seed: int = 0, vision: VisionSpec = TINY_VISION, med_config: dict[str, Any] | None = None
) -> Path:
    """Write a random ImageReward model (released layout + tiny tokenizer) into `folder`; returns `folder`.

    Tiny by default; `vision=VIT_LARGE, med_config=released_med_config()` gives the released architecture
    with random weights (about 1.8 GB; no vision_config.json then, as in the release).
    """
    folder.mkdir(parents=True, exist_ok=True)
    vocab = tiny_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": 512}))
    # BLIP's vocabulary is BERT's plus [DEC] and [ENC], which the loader adds to the tokenizer.
    med_config = med_config or tiny_med_config(vocab_size=len(vocab) + 2)
    (folder / MED_CONFIG_FILE).write_text(json.dumps(med_config, indent=2))
    if vision != VIT_LARGE:
        (folder / VISION_CONFIG_FILE).write_text(json.dumps(asdict(vision), indent=2))
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = ImageRewardModel(vision, text_config_from_med(med_config, encoder_hidden_size=vision.hidden_size))
    randomize(model, generator)
    torch.save(released_state_dict(model, generator), folder / CHECKPOINT_FILE)
    return folder
