"""The shapes model: SD3-architecture components sized for 64 px on a CPU, and its diffusers export.

Sizes (docs: the maintainers' prototype): VAE blocks (16, 32, 32), 4 norm groups, no mid-block attention,
4x16x16 latents (~234k parameters); SD3Transformer2DModel with 6 layers of 4 heads x 32, patch 2 (64 image
tokens), ~3.5M parameters; frozen random text encoders: CLIP-L and CLIP-G with hidden 64 (concatenated:
128 = T5 d_model = joint_attention_dim), projections 64 + 64 = pooled_projection_dim, T5 with d_model 128.
Every tokenizer stops at 16 tokens; the T5 tokenizer's model_max_length (16) is what SD3Family reads as
its max_sequence_length (see SD3Family.from_pretrained).
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from rewardflow_vision.tiny import BOS as CLIP_BOS
from rewardflow_vision.tiny import EOS as CLIP_EOS
from rewardflow_vision.tiny import write_clip_tokenizer
from transformers import (
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

from rewardflow_trainer.models.sd3 import SD3Family
from rewardflow_trainer.models.tiny import T5_EOS, T5_PAD, T5_UNK, t5_word_level_tokenizer

RESOLUTION = 64
LATENT_SIZE = 16
MAX_LENGTH = 16  # CLIP and T5 tokens; the shapes prompts need at most 13
TEXT_WIDTH = 128  # T5 d_model = joint_attention_dim = CLIP-L hidden + CLIP-G hidden
VAE_CHANNELS = (16, 32, 32)


def build_tokenizers(words: Sequence[str]) -> tuple[CLIPTokenizer, CLIPTokenizer, PreTrainedTokenizerFast]:
    """CLIP-L, CLIP-G and T5 tokenizers knowing `words` whole, limited to MAX_LENGTH tokens."""
    # BPE applies merges by rank, not word by word: in alphabetical order "right"'s merge "r i" outranks
    # "triangle"'s "t r", and "triangle" fell apart into 6 tokens (17-token prompts, cut at 16). Longest
    # words first gives every shapes word its own token; the check below refuses any word list it does not.
    ordered = sorted(set(words), key=lambda word: (-len(word), word))
    with tempfile.TemporaryDirectory(prefix="rewardflow-shapes-tok-") as tmp:
        write_clip_tokenizer(Path(tmp), MAX_LENGTH, words=ordered)
        tokenizer, tokenizer_2 = CLIPTokenizer.from_pretrained(tmp), CLIPTokenizer.from_pretrained(tmp)
    split = [word for word in ordered if len(tokenizer(word, add_special_tokens=False).input_ids) != 1]
    if split:
        raise ValueError(f"words {split} are not single CLIP tokens; expected every prompt word to be one token")
    tokenizer_3 = PreTrainedTokenizerFast(
        tokenizer_object=t5_word_level_tokenizer(tuple(words)),
        pad_token=T5_PAD,
        eos_token=T5_EOS,
        unk_token=T5_UNK,
        model_max_length=MAX_LENGTH,
    )
    return tokenizer, tokenizer_2, tokenizer_3


def build_vae() -> AutoencoderKL:
    """The 64 px VAE (random); its scaling and shift factors are set from measured latents after training."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(VAE_CHANNELS),
        up_block_types=("UpDecoderBlock2D",) * len(VAE_CHANNELS),
        block_out_channels=VAE_CHANNELS,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=RESOLUTION,
        mid_block_add_attention=False,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )


def build_transformer() -> SD3Transformer2DModel:
    """The ~3.5M-parameter SD3 transformer (random)."""
    return SD3Transformer2DModel(
        sample_size=LATENT_SIZE,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=6,
        attention_head_dim=32,
        num_attention_heads=4,
        joint_attention_dim=TEXT_WIDTH,
        caption_projection_dim=128,  # = heads x head_dim
        pooled_projection_dim=128,  # CLIP-L projection 64 + CLIP-G projection 64
        pos_embed_max_size=LATENT_SIZE // 2,
    )


def _clip(vocab_size: int, bos: int, eos: int) -> CLIPTextModelWithProjection:
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=TEXT_WIDTH // 2,
        intermediate_size=256,
        projection_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        hidden_act="gelu",
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    return CLIPTextModelWithProjection(config)


def _t5(vocab_size: int) -> T5EncoderModel:
    config = T5Config(
        vocab_size=vocab_size,
        d_model=TEXT_WIDTH,
        d_kv=32,
        d_ff=256,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        feed_forward_proj="gated-gelu",
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return T5EncoderModel(config)


def build_components(words: Sequence[str], seed: int) -> dict[str, Any]:
    """All StableDiffusion3Pipeline components, random from `seed` (the caller's RNG untouched)."""
    tokenizer, tokenizer_2, tokenizer_3 = build_tokenizers(words)
    vocab = tokenizer.get_vocab()
    with torch.random.fork_rng(devices=[]):
        modules = []
        for offset, build in enumerate(
            (
                build_transformer,
                build_vae,
                lambda: _clip(len(vocab), vocab[CLIP_BOS], vocab[CLIP_EOS]),
                lambda: _clip(len(vocab), vocab[CLIP_BOS], vocab[CLIP_EOS]),
                lambda: _t5(len(tokenizer_3)),
            )
        ):
            torch.manual_seed(seed + offset)
            modules.append(build().eval())
    transformer, vae, text_encoder, text_encoder_2, text_encoder_3 = modules
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": text_encoder_3,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "tokenizer_3": tokenizer_3,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=1.0),
    }


def family_of(components: dict[str, Any]) -> SD3Family:
    """The components as an SD3Family (float32, CPU, 64 px, 16 T5 tokens): the sampler's text path."""
    return SD3Family(**components, resolution=RESOLUTION, max_sequence_length=MAX_LENGTH, device="cpu")


def export(components: dict[str, Any], folder: Path, *, shift: float, half: bool) -> None:
    """Write the diffusers folder: transformer and VAE in float16 if `half`, text encoders float32."""
    from diffusers import StableDiffusion3Pipeline

    parts = dict(components, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift))
    if half:
        parts["transformer"] = _half_copy(components["transformer"])
        parts["vae"] = _half_copy(components["vae"])
    StableDiffusion3Pipeline(**parts).save_pretrained(str(folder))


def _half_copy(module: torch.nn.Module) -> torch.nn.Module:
    # nn.Module.half, not diffusers' .to(dtype), which warns about modules to keep in float32 (these have none)
    return copy.deepcopy(module).half()
