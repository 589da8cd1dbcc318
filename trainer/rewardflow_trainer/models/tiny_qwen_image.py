"""Tiny random Qwen-Image-architecture components, built in code from a seed: no download, bit-identical.

Sizes follow diffusers' own QwenImage pipeline tests (a 2-layer Qwen2.5-VL text model of width 16, a transformer
of 2 heads of 16, a 3D VAE with 4 latent channels), with a word-level tokenizer that splits QwenImagePipeline's
chat template into exactly the 34 tokens the pipeline drops, so that only the prompt and the template's closing
tokens reach the transformer (as with the real tokenizer).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from rewardflow_trainer.models import tiny

MAX_SEQUENCE_LENGTH = 24  # tiny prompts are at most ~12 words, plus the template's 5 closing tokens
LATENT_CHANNELS = 4  # Qwen-Image's VAE has 16; packed tokens carry 4 x 4 = 16 channels here
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>")
TEMPLATE_WORDS = (
    "system describe image by detailing color shape size texture quantity text spatial relationships objects "
    "background user assistant"
).split()

# Qwen-Image's scheduler settings as we know them (dynamic exponential shift, terminal sigma 0.02); the family
# itself reads whatever a checkpoint's scheduler config says.
SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "time_shift_type": "exponential",
    "use_dynamic_shifting": True,
}
# Per-channel latent statistics (not the identity), so the tiny model exercises the decode path's scaling.
LATENTS_MEAN = [0.1, -0.2, 0.05, 0.0]
LATENTS_STD = [1.5, 0.8, 1.2, 1.0]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level: lower-cased words, each punctuation mark and each newline one token; the chat markers special."""
    words = sorted(set(tiny.WORDS) | set(TEMPLATE_WORDS) | {",", ":", ".", "\n"})
    vocab = {token: i for i, token in enumerate([*SPECIALS, *words])}
    model = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    model.normalizer = normalizers.Lowercase()
    # The pieces are the matches (invert): a newline, a run of letters/digits, or one other visible character.
    model.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n|[^\W_]+|[^\w\s]"), behavior="removed", invert=True)
    model.add_special_tokens(list(SPECIALS[:3]))
    return PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="<|endoftext|>", unk_token="<unk>", model_max_length=2048
    )


def _text_encoder(tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLForConditionalGeneration:
    vocab = len(tokenizer)
    start, end = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    config = Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            "rope_theta": 1000000.0,
            "vocab_size": vocab,
            "bos_token_id": start,
            "eos_token_id": end,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={"depth": 1, "hidden_size": 16, "intermediate_size": 16, "num_heads": 2, "out_hidden_size": 16},
        hidden_size=16,
        vocab_size=vocab,
        # The vision markers are never used (no images in a text prompt); ids past the vocabulary keep them apart.
        image_token_id=vocab,
        video_token_id=vocab + 1,
        vision_start_token_id=vocab + 2,
        vision_end_token_id=vocab + 3,
        bos_token_id=start,
        eos_token_id=end,
    )
    return Qwen2_5_VLForConditionalGeneration(config)


def build_tiny_qwen_image(seed: int = 0, resolution: int = 64) -> dict[str, Any]:
    """All QwenImagePipeline components, tiny and random; same seed -> bit-identical weights, caller's RNG untouched.

    Shapes: latents (B, 4, 16, 16) at 64 px, packed to (B, 64, 16); text hidden 16 = joint attention dim;
    transformer 2 layers, 2 heads x 16, rope axes 8 + 4 + 4. The VAE is 8x: resolution must be a multiple of 16.
    """
    tokenizer = build_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = QwenImageTransformer2DModel(
            patch_size=2,
            in_channels=LATENT_CHANNELS * 4,
            out_channels=LATENT_CHANNELS,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=16,
            guidance_embeds=False,
            axes_dims_rope=(8, 4, 4),
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLQwenImage(
            base_dim=8,
            z_dim=LATENT_CHANNELS,
            dim_mult=[1, 2, 4],
            num_res_blocks=1,
            temperal_downsample=[False, True],
            latents_mean=LATENTS_MEAN,
            latents_std=LATENTS_STD,
        )
        torch.manual_seed(seed + 2)
        text_encoder = _text_encoder(tokenizer)
    for module in (transformer, vae, text_encoder):
        module.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULER),
    }
