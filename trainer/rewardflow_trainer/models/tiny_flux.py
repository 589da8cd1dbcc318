"""Tiny random FLUX-architecture components, built in code from a seed: no download, bit-identical.

Sizes follow diffusers' own FLUX pipeline tests (one double-stream and one single-stream block, heads of 16),
with a guidance embedding as in FLUX.1-dev, FLUX.1-dev's scheduler settings (dynamic shift, 0.5 to 1.15) and
the tiny SD3's tokenizers and VAE layout (models/tiny.py).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from rewardflow_vision.tiny import BOS as CLIP_BOS
from rewardflow_vision.tiny import EOS as CLIP_EOS
from rewardflow_vision.tiny import clip_vocab_and_merges
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from rewardflow_trainer.models import tiny

T5_MAX_LENGTH = tiny.T5_MAX_LENGTH
LATENT_CHANNELS = 4  # FLUX's VAE has 16; packed tokens carry 4 x 4 = 16 channels here

# FLUX.1-dev's scheduler_config.json (shift 3 is unused: dynamic shifting replaces it).
SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
# FLUX.1's own VAE constants, so the tiny model exercises the same decode path.
VAE_SCALING_FACTOR = 0.3611
VAE_SHIFT_FACTOR = 0.1159


def build_tiny_flux(seed: int = 0, resolution: int = 64) -> dict[str, Any]:
    """All FluxPipeline components, tiny and random; same seed -> bit-identical weights, caller's RNG untouched.

    Shapes: latents (B, 4, 16, 16) packed to (B, 64, 16) -> images (B, resolution, resolution, 3); CLIP hidden
    (pooled) 16, T5 d_model 32 = joint attention dim; transformer inner dim 2 heads x 16, rope axes 4 + 6 + 6.
    """
    channels = tiny.vae_channels(resolution)
    vocab, _ = clip_vocab_and_merges(tiny.WORDS)
    tokenizer, _, tokenizer_2 = tiny.build_tokenizers(tiny.CLIP_MAX_LENGTH)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=LATENT_CHANNELS * 4,
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=16,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),  # sums to the head dim
        )
        torch.manual_seed(seed + 1)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * len(channels),
            up_block_types=("UpDecoderBlock2D",) * len(channels),
            block_out_channels=channels,
            layers_per_block=1,
            latent_channels=LATENT_CHANNELS,
            norm_num_groups=8,
            sample_size=resolution,
            scaling_factor=VAE_SCALING_FACTOR,
            shift_factor=VAE_SHIFT_FACTOR,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        torch.manual_seed(seed + 2)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(vocab),
                hidden_size=16,
                intermediate_size=37,
                projection_dim=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                max_position_embeddings=tiny.CLIP_MAX_LENGTH,
                hidden_act="gelu",
                bos_token_id=vocab[CLIP_BOS],
                eos_token_id=vocab[CLIP_EOS],
                pad_token_id=vocab[CLIP_EOS],
            )
        )
        torch.manual_seed(seed + 3)
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
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
    for module in (transformer, vae, text_encoder, text_encoder_2):
        module.eval()
    return {
        "transformer": transformer,
        "vae": vae,
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer,
        "tokenizer_2": tokenizer_2,
        "scheduler": FlowMatchEulerDiscreteScheduler(**SCHEDULER),
    }
