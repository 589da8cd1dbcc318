"""Tiny random SD3-architecture components, built in code from a seed: no download, bit-identical.

Sizes and why: docs/algorithm.md, "The embedded default".
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from rewardflow_vision.tiny import BOS as CLIP_BOS
from rewardflow_vision.tiny import EOS as CLIP_EOS
from rewardflow_vision.tiny import clip_vocab_and_merges, write_clip_tokenizer
from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import WordLevel
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

# The words the tiny tokenizers know as whole tokens: GenEval/COCO objects, colours, counts and the glue of
# simple prompts. CLIP falls back to byte-level characters for anything else; T5 maps it to <unk>.
# The CLIP tokenizer files come from rewardflow_vision.tiny's writer (one copy), given these words.
WORDS: tuple[str, ...] = (
    "a an the of and with on in under above below behind next to left right top bottom photo picture image "
    "one two three four five six seven eight nine ten red orange yellow green blue purple pink brown black white "
    "gray grey gold silver big small tall short old young happy sad bright dark striped dotted "
    "person bicycle car motorcycle airplane bus train truck boat traffic light fire hydrant stop sign parking "
    "meter bench bird cat dog horse sheep cow elephant bear zebra giraffe backpack umbrella handbag tie suitcase "
    "frisbee skis snowboard sports ball kite baseball bat glove skateboard surfboard tennis racket bottle wine "
    "glass cup fork knife spoon bowl banana apple sandwich orange broccoli carrot hot pizza donut cake chair "
    "couch potted plant bed dining table toilet tv laptop mouse remote keyboard cell phone microwave oven "
    "toaster sink refrigerator book clock vase scissors teddy hair drier toothbrush house tree flower sky sea "
    "mountain river city street forest beach sun moon star cloud rain snow night day painting drawing sketch "
    "text says word letter sign poster"
).split()

TINY_LATENT_SIZE = 16  # latent side; pos_embed_max_size 8 = 16 / patch 2
CLIP_MAX_LENGTH = 16  # 77 CLIP tokens made an epoch ~1.3x slower on the tiny model
T5_MAX_LENGTH = 16
T5_PAD, T5_EOS, T5_UNK = "<pad>", "</s>", "<unk>"

# SD3's own VAE constants, so the tiny model exercises the same latent scaling path.
VAE_SCALING_FACTOR = 1.5305
VAE_SHIFT_FACTOR = 0.0609


def t5_word_level_tokenizer(words: tuple[str, ...] = WORDS) -> Tokenizer:
    """A `tokenizers` WordLevel model standing in for T5's sentencepiece: lower-cased words, then </s>."""
    specials = [T5_PAD, T5_EOS, T5_UNK]
    vocab = {token: i for i, token in enumerate(specials + sorted(set(words)))}
    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token=T5_UNK))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {T5_EOS}", special_tokens=[(T5_EOS, 1)])
    return tokenizer


def build_tokenizers(max_length: int = CLIP_MAX_LENGTH) -> tuple[CLIPTokenizer, CLIPTokenizer, PreTrainedTokenizerFast]:
    """The three tiny tokenizers (CLIP-L, CLIP-G, T5), written to a temp dir and loaded the way real ones are."""
    with tempfile.TemporaryDirectory(prefix="rewardflow-tiny-tok-") as tmp:
        clip_dir = Path(tmp) / "clip"
        write_clip_tokenizer(clip_dir, max_length, words=WORDS)
        tokenizer = CLIPTokenizer.from_pretrained(clip_dir)
        tokenizer_2 = CLIPTokenizer.from_pretrained(clip_dir)
    tokenizer_3 = PreTrainedTokenizerFast(
        tokenizer_object=t5_word_level_tokenizer(),
        pad_token=T5_PAD,
        eos_token=T5_EOS,
        unk_token=T5_UNK,
        model_max_length=T5_MAX_LENGTH,
    )
    return tokenizer, tokenizer_2, tokenizer_3


def _clip_config(vocab: dict[str, int], max_length: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=37,
        projection_dim=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=max_length,
        hidden_act="gelu",
        bos_token_id=vocab[CLIP_BOS],
        eos_token_id=vocab[CLIP_EOS],
        pad_token_id=vocab[CLIP_EOS],
    )


def vae_channels(resolution: int) -> tuple[int, ...]:
    """VAE block widths that decode the 16x16 tiny latent to `resolution` px: 64 -> (8, 16, 32), 128 -> 4 blocks."""
    factor = resolution // TINY_LATENT_SIZE
    if resolution % TINY_LATENT_SIZE or factor < 2 or factor & (factor - 1):
        raise ValueError(
            f"resolution={resolution} does not fit the tiny model; expected 16 x a power of two >= 2 (64, 128, 256)"
        )
    return (8, 16, 32, 32, 32, 32)[: factor.bit_length()]


def build_tiny_sd3(seed: int = 0, resolution: int = 64, max_length: int = CLIP_MAX_LENGTH) -> dict[str, Any]:
    """All SD3 pipeline components, tiny and random; same seed -> bit-identical weights, caller's RNG untouched.

    Shapes: latents (B, 4, 16, 16) -> images (B, resolution, resolution, 3) (a VAE block per doubling);
    CLIP-L/G hidden 16 each (concat 32 = T5 d_model), pooled 16 + 16 = 32; joint attention 32;
    text tokens = CLIP max length + T5 max length.
    """
    channels = vae_channels(resolution)
    vocab, _ = clip_vocab_and_merges(WORDS)
    tokenizer, tokenizer_2, tokenizer_3 = build_tokenizers(max_length)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=TINY_LATENT_SIZE,
            patch_size=2,
            in_channels=4,
            out_channels=4,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            caption_projection_dim=32,  # must equal heads x head_dim
            pooled_projection_dim=32,
            pos_embed_max_size=8,  # >= latent size / patch
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=channels,
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=resolution,
            scaling_factor=VAE_SCALING_FACTOR,
            shift_factor=VAE_SHIFT_FACTOR,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModelWithProjection(_clip_config(vocab, max_length))
        torch.manual_seed(seed + 3)
        text_encoder_2 = CLIPTextModelWithProjection(_clip_config(vocab, max_length))
        torch.manual_seed(seed + 4)
        text_encoder_3 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_3),
                d_model=32,
                d_kv=8,
                d_ff=37,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                feed_forward_proj="gated-gelu",
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
    for module in (transformer, vae, text_encoder, text_encoder_2, text_encoder_3):
        module.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": text_encoder_3,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "tokenizer_3": tokenizer_3,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0),
    }
