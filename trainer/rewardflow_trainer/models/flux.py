"""FLUX.1 (dev): CLIP-L pooled + T5 text embeddings, FluxTransformer2DModel on packed latents with image ids,
the embedded guidance (no negative branch), and the resolution-dependent shift of its schedule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from transformers import AutoTokenizer, CLIPTextModel, CLIPTokenizer, PreTrainedTokenizerBase, T5EncoderModel

from rewardflow_trainer.models.family import Guidance, PromptEmbeds
from rewardflow_trainer.models.packed import (
    PromptCache,
    decoded_to_uint8,
    model_timestep,
    packed_noise,
    shifted_sigmas,
    unpack,
)
from rewardflow_trainer.models.sd3 import _place as place

COMPONENTS = ("transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler")

MAX_SEQUENCE_LENGTH = 128
"""T5 tokens per prompt: the reference's FLUX training and evaluation use 128 (FluxPipeline's default is 512)."""


def image_ids(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(h * w, 3) positions of the packed tokens: (0, row, column), as FluxPipeline lays them out."""
    ids = torch.zeros(height, width, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(height)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(width)[None, :]
    return ids.reshape(height * width, 3).to(device=device, dtype=dtype)


class FluxFamily:
    """FLUX behind the ModelFamily seam. Latents: packed float32 (B, h/2 * w/2, 4C), h = w = resolution / 8.

    Embeds: "prompt_embeds" (B, L_t5, D_t5) and "pooled_prompt_embeds" (B, D_clip), built as
    FluxPipeline.encode_prompt builds them. Guidance: `scale` feeds the guidance embedding; `cfg` must be
    False (FLUX-dev is guidance-distilled: one conditional pass).
    """

    name = "flux"

    def __init__(
        self,
        *,
        transformer: FluxTransformer2DModel,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        text_encoder_2: T5EncoderModel,
        tokenizer: PreTrainedTokenizerBase,
        tokenizer_2: PreTrainedTokenizerBase,
        scheduler: FlowMatchEulerDiscreteScheduler,
        resolution: int = 512,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        dtype: torch.dtype = torch.float32,
        vae_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        embed_cache_size: int = 1024,
    ) -> None:
        vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        if resolution % (vae_scale * 2) != 0:
            raise ValueError(
                f"resolution={resolution} must be a multiple of {vae_scale * 2} (VAE factor {vae_scale} x packing 2)"
            )
        self.device, self.dtype = torch.device(device), dtype
        self.resolution, self.max_sequence_length = resolution, max_sequence_length
        self.latent_size = 2 * (resolution // (vae_scale * 2))
        self.transformer = place(transformer, self.device, dtype)
        self.vae = place(vae, self.device, vae_dtype)
        self.text_encoder = place(text_encoder, self.device, dtype)
        self.text_encoder_2 = place(text_encoder_2, self.device, dtype)
        self.tokenizer, self.tokenizer_2, self.scheduler = tokenizer, tokenizer_2, scheduler
        for frozen in (self.vae, self.text_encoder, self.text_encoder_2):
            frozen.requires_grad_(False).eval()
        half = self.latent_size // 2
        self.img_ids = image_ids(half, half, self.device, dtype)
        self._cache: PromptCache[tuple[torch.Tensor, torch.Tensor]] = PromptCache(self._encode_one, embed_cache_size)

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    # ---- construction -------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        model_id_or_path: str | Path,
        *,
        dtype: torch.dtype = torch.bfloat16,
        device: torch.device | str = "cuda",
        revision: str | None = None,
        **options: Any,
    ) -> FluxFamily:
        """Load the diffusers FLUX layout (transformer/, vae/, text_encoder{,_2}/, tokenizer{,_2}/, scheduler/)."""
        source, at = str(model_id_or_path), {"revision": revision}
        tokenizer_2 = AutoTokenizer.from_pretrained(source, subfolder="tokenizer_2", **at)
        options.setdefault("max_sequence_length", min(MAX_SEQUENCE_LENGTH, tokenizer_2.model_max_length))
        return cls(
            transformer=FluxTransformer2DModel.from_pretrained(
                source, subfolder="transformer", torch_dtype=dtype, **at
            ),
            vae=AutoencoderKL.from_pretrained(source, subfolder="vae", **at),
            text_encoder=CLIPTextModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **at),
            text_encoder_2=T5EncoderModel.from_pretrained(source, subfolder="text_encoder_2", dtype=dtype, **at),
            tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **at),
            tokenizer_2=tokenizer_2,
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler", **at),
            dtype=dtype,
            device=device,
            **options,
        )

    @classmethod
    def tiny(cls, seed: int = 0, *, device: torch.device | str = "cpu", **options: Any) -> FluxFamily:
        """The tiny random FLUX (models/tiny_flux.py) from `seed`; 64 px by default."""
        from rewardflow_trainer.models import tiny_flux

        options = {"resolution": 64, "max_sequence_length": tiny_flux.T5_MAX_LENGTH, **options}
        return cls(**tiny_flux.build_tiny_flux(seed, resolution=options["resolution"]), device=device, **options)

    def components(self) -> dict[str, Any]:
        """The diffusers FluxPipeline components (shared, not copied)."""
        return {name: getattr(self, name) for name in COMPONENTS}

    def save_pretrained(self, path: str | Path) -> None:
        """Write the diffusers FLUX layout, loadable by `from_pretrained` and by FluxPipeline."""
        from diffusers import FluxPipeline

        FluxPipeline(**self.components()).save_pretrained(str(path))

    @staticmethod
    def save_lora_weights(directory: Path, lora_layers: dict[str, torch.Tensor], adapter_metadata: dict) -> None:
        """Write transformer LoRA weights as FluxPipeline.load_lora_weights reads them."""
        from diffusers import FluxPipeline

        FluxPipeline.save_lora_weights(
            directory, transformer_lora_layers=lora_layers, transformer_lora_adapter_metadata=adapter_metadata
        )

    # ---- text ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        clip_ids = self.tokenizer(
            [prompt],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        pooled = self.text_encoder(clip_ids.to(self.device), output_hidden_states=False).pooler_output
        t5_ids = self.tokenizer_2(
            [prompt], padding="max_length", max_length=self.max_sequence_length, truncation=True, return_tensors="pt"
        ).input_ids
        prompt_embeds = self.text_encoder_2(t5_ids.to(self.device), output_hidden_states=False)[0]
        return prompt_embeds[0].to(self.dtype), pooled[0].to(self.dtype)

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        """prompt_embeds (B, L, D) from T5, pooled_prompt_embeds (B, P) from CLIP; each prompt encoded alone, cached."""
        rows = self._cache.rows(prompts)
        return PromptEmbeds(
            {
                "prompt_embeds": torch.stack([r[0] for r in rows]),
                "pooled_prompt_embeds": torch.stack([r[1] for r in rows]),
            }
        )

    # ---- latents, velocity, images --------------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one sample's unpacked latents."""
        return (self.transformer.config.in_channels // 4, self.latent_size, self.latent_size)

    def initial_latents(
        self, batch_size: int, *, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Packed standard normal latents (B, h/2 * w/2, 4C) float32 (see packed.packed_noise for `seeds`)."""
        return packed_noise(batch_size, self.latent_shape(), self.device, generator=generator, seeds=seeds)

    def velocity(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        embeds: PromptEmbeds,
        guidance: Guidance,
        *,
        transformer: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """Velocity (B, tokens, 4C) float32 at `sigma` (B,): one conditional pass, guidance embedded."""
        if guidance.cfg:
            raise ValueError(
                "sample.cfg = true: FLUX-dev has no negative branch (its guidance scale is embedded); "
                "expected sample.cfg = false with sample.guidance_scale the embedded scale (3.5)"
            )
        model = self.transformer if transformer is None else transformer
        batch = latents.shape[0]
        embedded = None
        if self.transformer.config.guidance_embeds:
            embedded = torch.full((batch,), guidance.scale, device=latents.device, dtype=torch.float32)
        prompt_embeds = embeds["prompt_embeds"]
        txt_ids = torch.zeros(prompt_embeds.shape[1], 3, device=self.device, dtype=self.dtype)
        return model(
            hidden_states=latents.to(self.dtype),
            timestep=model_timestep(sigma, self.num_train_timesteps, self.dtype),
            guidance=embedded,
            pooled_projections=embeds["pooled_prompt_embeds"],
            encoder_hidden_states=prompt_embeds,
            txt_ids=txt_ids,
            img_ids=self.img_ids,
            return_dict=False,
        )[0].to(torch.float32)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Packed latents -> uint8 images (B, H, W, 3): unpack, undo the VAE's scaling and shift, decode."""
        config = self.vae.config
        spatial = unpack(latents, self.latent_size, self.latent_size)
        scaled = spatial.to(self.vae.dtype) / config.scaling_factor + config.shift_factor
        return decoded_to_uint8(self.vae.decode(scaled, return_dict=False)[0])

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """FluxPipeline's schedule (num_steps + 1,) float32, ending at 0: shifted by mu of the image's token count."""
        tokens = (self.latent_size // 2) ** 2
        return shifted_sigmas(self.scheduler.config, num_steps, tokens, self.device)
