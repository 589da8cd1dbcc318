"""Tiny random CLIP models written to a directory like real checkpoints: for tests and benches, no download.

The tiny CLIP tokenizer writer (`write_clip_tokenizer`) is the one copy: the trainer's tiny SD3 writes
its CLIP tokenizers with it too, with its own word list and context length.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel

from rewardflow_vision.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

WORDS: tuple[str, ...] = tuple(
    "a an the of and with on in photo picture of cat dog red blue green car tree house sky sea "
    "big small painting drawing text sign says".split()
)
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP byte -> printable unicode map (as in openai/CLIP simple_tokenizer.py)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def clip_vocab_and_merges(words: Sequence[str] = WORDS) -> tuple[dict[str, int], list[str]]:
    """A byte-level CLIP BPE vocab (every byte, alone and word-final) plus left-to-right merges for `words`."""
    byte_chars = list(bytes_to_unicode().values())
    tokens = byte_chars + [c + "</w>" for c in byte_chars]
    merges: list[str] = []
    seen = set(tokens)
    for word in words:
        symbols = [*word[:-1], word[-1] + "</w>"]
        current = symbols[0]
        for symbol in symbols[1:]:
            merged = current + symbol
            if merged not in seen:
                merges.append(f"{current} {symbol}")
                tokens.append(merged)
                seen.add(merged)
            current = merged
    tokens += [BOS, EOS]
    return {token: i for i, token in enumerate(tokens)}, merges


def write_clip_tokenizer(directory: Path, max_length: int = 77, words: Sequence[str] = WORDS) -> dict[str, int]:
    """Write vocab.json, merges.txt, tokenizer_config.json of a CLIPTokenizer knowing `words`; returns the vocab."""
    vocab, merges = clip_vocab_and_merges(words)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config))
    return vocab


def write_clip_image_processor(directory: Path, shortest_edge: int, crop_size: int) -> None:
    """Write a CLIPImageProcessor preprocessor_config.json (bicubic, OpenAI mean/std) into `directory`."""
    config = {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": shortest_edge},
        "resample": 3,
        "do_center_crop": True,
        "crop_size": {"height": crop_size, "width": crop_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": list(OPENAI_CLIP_MEAN),
        "image_std": list(OPENAI_CLIP_STD),
        "do_convert_rgb": True,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor_config.json").write_text(json.dumps(config, indent=2))


def tiny_clip_config(
    vocab: dict[str, int], *, image_size: int = 32, patch_size: int = 8, projection_dim: int = 16, hidden: int = 32
) -> CLIPConfig:
    """A 2-layer CLIP (text and vision) with the real architecture; text context 77 like real CLIP."""
    text = {
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": 77,
        "bos_token_id": vocab[BOS],
        "eos_token_id": vocab[EOS],
        "pad_token_id": vocab[EOS],
    }
    vision = {
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": patch_size,
    }
    return CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=projection_dim, logit_scale_init_value=math.log(100.0)
    )


def write_tiny_clip(
    directory: str | Path,
    *,
    seed: int = 0,
    image_size: int = 32,
    shortest_edge: int | None = None,
    projection_dim: int = 16,
    hidden: int = 32,
) -> Path:
    """A tiny random CLIPModel + CLIPTokenizer + CLIPImageProcessor config saved in `directory` (safetensors).

    The processor resizes the shortest side to `shortest_edge` (default: `image_size`) and center-crops
    `image_size`, as the real CLIP processors do with 224.
    """
    directory = Path(directory)
    vocab = write_clip_tokenizer(directory)
    write_clip_image_processor(directory, shortest_edge or image_size, image_size)
    config = tiny_clip_config(vocab, image_size=image_size, projection_dim=projection_dim, hidden=hidden)
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = CLIPModel(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(directory, safe_serialization=True)
    return directory
