"""Qwen-Image: a Qwen2.5-VL text encoder behind a chat template, QwenImageTransformer2DModel on packed latents,
true classifier-free guidance with a negative prompt and norm rescaling, the 3D VAE's per-channel latent statistics,
and the resolution-dependent shift of its schedule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageTransformer2DModel
from transformers import AutoTokenizer, PreTrainedTokenizerBase, Qwen2_5_VLForConditionalGeneration

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

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")

# QwenImagePipeline's prompt template and the number of template tokens it drops from the encoder output.
PROMPT_TEMPLATE = (
    "<|im_start|>system\nDescribe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"
)
TEMPLATE_TOKENS = 34
TOKENIZER_MAX_LENGTH = 1024  # QwenImagePipeline.tokenizer_max_length
MAX_SEQUENCE_LENGTH = 512
"""Text tokens kept per prompt (the reference's pipeline default); embeddings are stored padded to this length."""
NEGATIVE_PROMPT = " "
"""The reference's negative prompt for true CFG (a single space)."""


class QwenImageFamily:
    """Qwen-Image behind the ModelFamily seam. Latents: packed float32 (B, h/2 * w/2, 4C), h = w = resolution / 8.

    Embeds: "prompt_embeds" (B, L, D) zero-padded to `max_sequence_length` and "prompt_embeds_mask" (B, L) int64
    (1 on real tokens), each prompt encoded as QwenImagePipeline.encode_prompt encodes it. Guidance: `cfg` runs the
    conditional and the negative-prompt pass and combines them as the pipeline's true CFG does; `cfg=False` is the
    conditional pass only.
    """

    name = "qwen_image"

    def __init__(
        self,
        *,
        transformer: QwenImageTransformer2DModel,
        vae: AutoencoderKLQwenImage,
        text_encoder: Qwen2_5_VLForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        scheduler: FlowMatchEulerDiscreteScheduler,
        resolution: int = 512,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        negative_prompt: str = NEGATIVE_PROMPT,
        dtype: torch.dtype = torch.float32,
        vae_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        embed_cache_size: int = 1024,
    ) -> None:
        vae_scale = 2 ** len(vae.temperal_downsample)
        if resolution % (vae_scale * 2) != 0:
            raise ValueError(
                f"resolution={resolution} must be a multiple of {vae_scale * 2} (VAE factor {vae_scale} x packing 2)"
            )
        self.device, self.dtype = torch.device(device), dtype
        self.resolution, self.max_sequence_length = resolution, max_sequence_length
        self.negative_prompt = negative_prompt
        self.latent_size = 2 * (resolution // (vae_scale * 2))
        self.transformer = place(transformer, self.device, dtype)
        self.vae = place(vae, self.device, vae_dtype)
        self.text_encoder = place(text_encoder, self.device, dtype)
        self.tokenizer, self.scheduler = tokenizer, scheduler
        for frozen in (self.vae, self.text_encoder):
            frozen.requires_grad_(False).eval()
        self._cache: PromptCache[torch.Tensor] = PromptCache(self._encode_one, embed_cache_size)

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
    ) -> QwenImageFamily:
        """Load the diffusers Qwen-Image layout (transformer/, vae/, text_encoder/, tokenizer/, scheduler/)."""
        source, at = str(model_id_or_path), {"revision": revision}
        encoder = Qwen2_5_VLForConditionalGeneration
        return cls(
            transformer=QwenImageTransformer2DModel.from_pretrained(
                source, subfolder="transformer", torch_dtype=dtype, **at
            ),
            vae=AutoencoderKLQwenImage.from_pretrained(source, subfolder="vae", **at),
            text_encoder=encoder.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **at),
            tokenizer=AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **at),
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler", **at),
            dtype=dtype,
            device=device,
            **options,
        )

    @classmethod
    def tiny(cls, seed: int = 0, *, device: torch.device | str = "cpu", **options: Any) -> QwenImageFamily:
        """The tiny random Qwen-Image (models/tiny_qwen_image.py) from `seed`; 64 px by default."""
        from rewardflow_trainer.models import tiny_qwen_image

        options = {"resolution": 64, "max_sequence_length": tiny_qwen_image.MAX_SEQUENCE_LENGTH, **options}
        built = tiny_qwen_image.build_tiny_qwen_image(seed, resolution=options["resolution"])
        return cls(**built, device=device, **options)

    def components(self) -> dict[str, Any]:
        """The diffusers QwenImagePipeline components (shared, not copied)."""
        return {name: getattr(self, name) for name in COMPONENTS}

    def save_pretrained(self, path: str | Path) -> None:
        """Write the diffusers Qwen-Image layout, loadable by `from_pretrained` and by QwenImagePipeline."""
        from diffusers import QwenImagePipeline

        QwenImagePipeline(**self.components()).save_pretrained(str(path))

    @staticmethod
    def save_lora_weights(directory: Path, lora_layers: dict[str, torch.Tensor], adapter_metadata: dict) -> None:
        """Write transformer LoRA weights as QwenImagePipeline.load_lora_weights reads them."""
        from diffusers import QwenImagePipeline

        QwenImagePipeline.save_lora_weights(
            directory, transformer_lora_layers=lora_layers, transformer_lora_adapter_metadata=adapter_metadata
        )

    # ---- text ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> torch.Tensor:
        """(L, D): the encoder's last hidden states of the templated prompt, template tokens dropped, at most
        `max_sequence_length` of them."""
        tokens = self.tokenizer(
            [PROMPT_TEMPLATE.format(prompt)],
            max_length=TOKENIZER_MAX_LENGTH + TEMPLATE_TOKENS,
            truncation=True,
            return_tensors="pt",
        ).to(self.device)
        output = self.text_encoder(
            input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, output_hidden_states=True
        )
        hidden = output.hidden_states[-1][0, TEMPLATE_TOKENS:]
        return hidden[: self.max_sequence_length].to(self.dtype)

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        """prompt_embeds (B, max_sequence_length, D) zero-padded, prompt_embeds_mask (B, max_sequence_length)."""
        rows = self._cache.rows(prompts)
        width = self.max_sequence_length
        embeds = torch.stack([F.pad(r, (0, 0, 0, width - r.shape[0])) for r in rows])
        mask = torch.zeros(len(rows), width, dtype=torch.long, device=self.device)
        for i, row in enumerate(rows):
            mask[i, : row.shape[0]] = 1
        return PromptEmbeds({"prompt_embeds": embeds, "prompt_embeds_mask": mask})

    def negative_embeds(self, batch_size: int) -> PromptEmbeds:
        """The negative prompt's embedding (true CFG), repeated to (B, ...)."""
        embeds = self.encode([self.negative_prompt])
        return PromptEmbeds({k: v.expand(batch_size, *v.shape[1:]) for k, v in embeds.tensors.items()})

    # ---- latents, velocity, images --------------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one sample's unpacked latents."""
        return (self.transformer.config.in_channels // 4, self.latent_size, self.latent_size)

    def initial_latents(
        self, batch_size: int, *, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Packed standard normal latents (B, h/2 * w/2, 4C) float32 (see packed.packed_noise for `seeds`)."""
        return packed_noise(batch_size, self.latent_shape(), self.device, generator=generator, seeds=seeds)

    def _pass(
        self, model: torch.nn.Module, hidden: torch.Tensor, timestep: torch.Tensor, embeds: PromptEmbeds
    ) -> torch.Tensor:
        """One transformer pass, the text trimmed to the batch's longest prompt (the mask dropped when all ones,
        as the pipeline drops it), float32 output."""
        mask = embeds["prompt_embeds_mask"]
        length = int(mask.sum(dim=1).max())
        mask = mask[:, :length]
        side = self.latent_size // 2
        return model(
            hidden_states=hidden,
            timestep=timestep,
            guidance=None,
            encoder_hidden_states_mask=None if bool(mask.all()) else mask,
            encoder_hidden_states=embeds["prompt_embeds"][:, :length],
            img_shapes=[[(1, side, side)]] * hidden.shape[0],
            return_dict=False,
        )[0].to(torch.float32)

    def velocity(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        embeds: PromptEmbeds,
        guidance: Guidance,
        *,
        transformer: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """Velocity (B, tokens, 4C) float32 at `sigma` (B,); `transformer` overrides the policy (reference).

        True CFG, in float32: `c = v_n + w (v_c - v_n)`, then rescaled token by token to the conditional
        prediction's norm: `v = c * |v_c| / |c|` (norms over channels), as QwenImagePipeline does.
        """
        model = self.transformer if transformer is None else transformer
        hidden = latents.to(self.dtype)
        timestep = model_timestep(sigma, self.num_train_timesteps, self.dtype)
        cond = self._pass(model, hidden, timestep, embeds)
        if not guidance.cfg:
            return cond
        negative = self._pass(model, hidden, timestep, self.negative_embeds(latents.shape[0]))
        if guidance.detach_uncond:
            negative = negative.detach()
        combined = negative + guidance.scale * (cond - negative)
        return combined * (torch.norm(cond, dim=-1, keepdim=True) / torch.norm(combined, dim=-1, keepdim=True))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Packed latents -> uint8 images (B, H, W, 3): unpack, undo the per-channel latent mean/std, decode frame 0."""
        config = self.vae.config
        spatial = unpack(latents, self.latent_size, self.latent_size)[:, :, None].to(self.vae.dtype)
        shape = (1, config.z_dim, 1, 1, 1)
        mean = torch.tensor(config.latents_mean).view(shape).to(spatial.device, spatial.dtype)
        inverse_std = 1.0 / torch.tensor(config.latents_std).view(shape).to(spatial.device, spatial.dtype)
        image = self.vae.decode(spatial / inverse_std + mean, return_dict=False)[0][:, :, 0]
        return decoded_to_uint8(image)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """QwenImagePipeline's schedule (num_steps + 1,) float32, ending at 0, shifted by the image's token count."""
        tokens = (self.latent_size // 2) ** 2
        return shifted_sigmas(self.scheduler.config, num_steps, tokens, self.device)
