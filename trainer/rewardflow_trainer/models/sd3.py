"""Stable Diffusion 3 / 3.5: three text encoders (CLIP-L, CLIP-G, T5), SD3Transformer2DModel, VAE, shift-3 flow."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from transformers import (
    AutoTokenizer,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    PreTrainedTokenizerBase,
    T5EncoderModel,
)

from rewardflow_trainer.models import tiny
from rewardflow_trainer.models.family import Guidance, PromptEmbeds

COMPONENTS = (
    "transformer",
    "vae",
    "text_encoder",
    "text_encoder_2",
    "text_encoder_3",
    "tokenizer",
    "tokenizer_2",
    "tokenizer_3",
    "scheduler",
)

MAX_SEQUENCE_LENGTH = 128
"""T5 tokens per prompt (Flow-GRPO's setting); from_pretrained lowers it to the tokenizer's model_max_length."""


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Move to `device`; cast only when needed (diffusers warns on every dtype `.to`)."""
    module = module.to(device, dtype) if any(p.dtype != dtype for p in module.parameters()) else module.to(device)
    for tensor in [*module.parameters(), *module.buffers()]:
        # Weights loaded from safetensors on CPU sit at unaligned offsets, and CPU GEMM kernels then round
        # differently: a saved-and-reloaded model would not reproduce the one that was saved bit for bit.
        if tensor.device.type == "cpu" and tensor.data_ptr() % 64 != 0:
            tensor.data = tensor.data.clone()
    return module


def calculate_shift(seq_len: int, base_seq_len: int, max_seq_len: int, base_shift: float, max_shift: float) -> float:
    """Resolution-dependent shift mu (adapted from diffusers' pipeline_stable_diffusion_3, unchanged)."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    intercept = base_shift - slope * base_seq_len
    return seq_len * slope + intercept


class SD3Family:
    """SD3-family model behind the ModelFamily seam. Latents: float32 (B, C, H/8, W/8) (H/4 for the tiny VAE).

    Embeds: "prompt_embeds" (B, L_clip + L_t5, D_t5) and "pooled_prompt_embeds" (B, P_clip_l + P_clip_g),
    built exactly as diffusers' StableDiffusion3Pipeline.encode_prompt builds them.
    """

    name = "sd3"

    def __init__(
        self,
        *,
        transformer: SD3Transformer2DModel,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModelWithProjection,
        text_encoder_2: CLIPTextModelWithProjection,
        text_encoder_3: T5EncoderModel | None,
        tokenizer: PreTrainedTokenizerBase,
        tokenizer_2: PreTrainedTokenizerBase,
        tokenizer_3: PreTrainedTokenizerBase | None,
        scheduler: FlowMatchEulerDiscreteScheduler,
        resolution: int = 512,
        max_sequence_length: int = MAX_SEQUENCE_LENGTH,
        dtype: torch.dtype = torch.float32,
        vae_dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        embed_cache_size: int = 1024,
    ) -> None:
        vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        if resolution % (vae_scale * transformer.config.patch_size) != 0:
            raise ValueError(
                f"resolution={resolution} must be a multiple of {vae_scale * transformer.config.patch_size} "
                f"(VAE factor {vae_scale} x patch size {transformer.config.patch_size})"
            )
        self.device = torch.device(device)
        self.dtype = dtype
        self.resolution = resolution
        self.max_sequence_length = max_sequence_length
        self.latent_size = resolution // vae_scale
        self.embed_cache_size = embed_cache_size
        self.transformer = _place(transformer, self.device, dtype)
        self.vae = _place(vae, self.device, vae_dtype)
        self.text_encoder = _place(text_encoder, self.device, dtype)
        self.text_encoder_2 = _place(text_encoder_2, self.device, dtype)
        self.text_encoder_3 = None if text_encoder_3 is None else _place(text_encoder_3, self.device, dtype)
        self.tokenizer, self.tokenizer_2, self.tokenizer_3 = tokenizer, tokenizer_2, tokenizer_3
        self.scheduler = scheduler
        for frozen in (self.vae, self.text_encoder, self.text_encoder_2, self.text_encoder_3):
            if frozen is not None:
                frozen.requires_grad_(False).eval()
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

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
    ) -> SD3Family:
        """Load the diffusers SD3 layout (transformer/, vae/, text_encoder{,_2,_3}/, tokenizer{,_2,_3}/, scheduler/).

        A hub id or a local folder; HF_HUB_OFFLINE=1 (read by huggingface_hub) keeps it to the local cache.
        A checkpoint without text_encoder_3 (T5 dropped) gets zero T5 embeddings, as in diffusers.
        """
        source, at = str(model_id_or_path), {"revision": revision}
        has_t5 = not Path(source).is_dir() or (Path(source) / "text_encoder_3").is_dir()
        clip = CLIPTextModelWithProjection
        tokenizer_3 = AutoTokenizer.from_pretrained(source, subfolder="tokenizer_3", **at) if has_t5 else None
        if tokenizer_3 is not None and "max_sequence_length" not in options:
            # T5 tokens: 128 (Flow-GRPO's) unless the tokenizer says fewer: SD3.5's says 512, a small model
            # trained on 16 tokens (the shipped shapes model) says 16 and must be padded to exactly that.
            options["max_sequence_length"] = min(MAX_SEQUENCE_LENGTH, tokenizer_3.model_max_length)
        return cls(
            transformer=SD3Transformer2DModel.from_pretrained(source, subfolder="transformer", torch_dtype=dtype, **at),
            vae=AutoencoderKL.from_pretrained(source, subfolder="vae", **at),
            text_encoder=clip.from_pretrained(source, subfolder="text_encoder", dtype=dtype, **at),
            text_encoder_2=clip.from_pretrained(source, subfolder="text_encoder_2", dtype=dtype, **at),
            text_encoder_3=T5EncoderModel.from_pretrained(source, subfolder="text_encoder_3", dtype=dtype, **at)
            if has_t5
            else None,
            tokenizer=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", **at),
            tokenizer_2=CLIPTokenizer.from_pretrained(source, subfolder="tokenizer_2", **at),
            tokenizer_3=tokenizer_3,
            scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(source, subfolder="scheduler", **at),
            dtype=dtype,
            device=device,
            **options,
        )

    @classmethod
    def tiny(cls, seed: int = 0, *, device: torch.device | str = "cpu", **options: Any) -> SD3Family:
        """The tiny random SD3 (~78k transformer parameters; docs/algorithm.md), from `seed`; 64 px by default."""
        options = {"resolution": 64, "max_sequence_length": tiny.T5_MAX_LENGTH, **options}
        return cls(**tiny.build_tiny_sd3(seed, resolution=options["resolution"]), device=device, **options)

    def components(self) -> dict[str, Any]:
        """The diffusers StableDiffusion3Pipeline components (shared, not copied)."""
        return {name: getattr(self, name) for name in COMPONENTS}

    def save_pretrained(self, path: str | Path) -> None:
        """Write the diffusers SD3 layout, loadable by `from_pretrained` and by StableDiffusion3Pipeline."""
        from diffusers import StableDiffusion3Pipeline

        StableDiffusion3Pipeline(**self.components()).save_pretrained(str(path))

    @staticmethod
    def save_lora_weights(directory: Path, lora_layers: dict[str, torch.Tensor], adapter_metadata: dict) -> None:
        """Write transformer LoRA weights as StableDiffusion3Pipeline.load_lora_weights reads them."""
        from diffusers import StableDiffusion3Pipeline

        StableDiffusion3Pipeline.save_lora_weights(
            directory, transformer_lora_layers=lora_layers, transformer_lora_adapter_metadata=adapter_metadata
        )

    # ---- text ---------------------------------------------------------------------------------------------

    def _clip(self, index: int, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        tokenizer = (self.tokenizer, self.tokenizer_2)[index]
        encoder = (self.text_encoder, self.text_encoder_2)[index]
        ids = tokenizer(
            [prompt],
            padding="max_length",
            max_length=self.tokenizer.model_max_length,  # diffusers uses CLIP-L's length for both
            truncation=True,
            return_tensors="pt",
        ).input_ids
        output = encoder(ids.to(self.device), output_hidden_states=True)
        return output.hidden_states[-2], output[0]

    def _t5(self, prompt: str, width: int) -> torch.Tensor:
        if self.text_encoder_3 is None or self.tokenizer_3 is None:
            return torch.zeros(1, self.max_sequence_length, width, device=self.device, dtype=self.dtype)
        ids = self.tokenizer_3(
            [prompt],
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        ).input_ids
        return self.text_encoder_3(ids.to(self.device))[0]

    @torch.no_grad()
    def _encode_one(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_l, pooled_l = self._clip(0, prompt)
        hidden_g, pooled_g = self._clip(1, prompt)
        t5 = self._t5(prompt, self.transformer.config.joint_attention_dim)
        clip = torch.cat([hidden_l, hidden_g], dim=-1)
        clip = F.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        prompt_embeds = torch.cat([clip, t5], dim=-2).to(self.dtype)
        pooled = torch.cat([pooled_l, pooled_g], dim=-1).to(self.dtype)
        return prompt_embeds[0], pooled[0]

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Text conditioning for `prompts`; prompt_embeds (B, L, D), pooled_prompt_embeds (B, P).

        Each prompt is encoded alone and cached (LRU, `embed_cache_size` prompts): its embedding never
        depends on which other prompts share the batch, so reruns and resumes see the same bits.
        """
        rows = []
        for prompt in prompts:
            if prompt in self._cache:
                self._cache.move_to_end(prompt)
            else:
                self._cache[prompt] = self._encode_one(prompt)
                while len(self._cache) > self.embed_cache_size:
                    self._cache.popitem(last=False)
            rows.append(self._cache[prompt])
        return PromptEmbeds(
            {
                "prompt_embeds": torch.stack([r[0] for r in rows]),
                "pooled_prompt_embeds": torch.stack([r[1] for r in rows]),
            }
        )

    def negative_embeds(self, batch_size: int) -> PromptEmbeds:
        """The empty-prompt ("") embedding of CFG, repeated to (B, ...)."""
        embeds = self.encode([""])
        return PromptEmbeds({k: v.expand(batch_size, *v.shape[1:]) for k, v in embeds.tensors.items()})

    # ---- latents, velocity, images --------------------------------------------------------------------------

    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one sample's latents."""
        return (self.transformer.config.in_channels, self.latent_size, self.latent_size)

    def initial_latents(
        self, batch_size: int, *, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Standard normal latents (B, C, h, w) float32, drawn on the generator's device (CPU by default).

        With `seeds` (one per sample) each sample's noise comes from its own CPU generator, so samples with
        equal seeds (a prompt group under `same_latent`) start identical whatever the batch holds.
        """
        shape = self.latent_shape()
        if seeds is not None:
            if len(seeds) != batch_size:
                raise ValueError(f"seeds has {len(seeds)} entries; expected batch_size={batch_size}")
            noise = [
                torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float32) for s in seeds
            ]
            return torch.stack(noise).to(self.device)
        device = generator.device if generator is not None else torch.device("cpu")
        latents = torch.randn((batch_size, *shape), generator=generator, device=device, dtype=torch.float32)
        return latents.to(self.device)

    def velocity(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        embeds: PromptEmbeds,
        guidance: Guidance,
        *,
        transformer: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """Guided velocity (B, C, h, w) float32 at `sigma` (B,); `transformer` overrides the policy (reference).

        CFG: one batched pass over [uncond (B), cond (B)] at the compute dtype, then
        `v = v_u + w (v_c - v_u)` in float32. Timesteps are sigma * num_train_timesteps.
        """
        model = self.transformer if transformer is None else transformer
        batch = latents.shape[0]
        timestep = sigma.to(torch.float32) * self.num_train_timesteps
        hidden = latents.to(self.dtype)
        prompt_embeds, pooled = embeds["prompt_embeds"], embeds["pooled_prompt_embeds"]
        if guidance.cfg:
            negative = self.negative_embeds(batch)
            hidden = torch.cat([hidden, hidden])
            timestep = torch.cat([timestep, timestep])
            prompt_embeds = torch.cat([negative["prompt_embeds"], prompt_embeds])
            pooled = torch.cat([negative["pooled_prompt_embeds"], pooled])
        output = model(
            hidden_states=hidden,
            timestep=timestep,
            encoder_hidden_states=prompt_embeds,
            pooled_projections=pooled,
            return_dict=False,
        )[0].to(torch.float32)
        if not guidance.cfg:
            return output
        uncond, cond = output.chunk(2)
        if guidance.detach_uncond:
            uncond = uncond.detach()
        return uncond + guidance.scale * (cond - uncond)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Latents (B, C, h, w) -> uint8 images (B, H, W, 3), undoing the VAE's scaling and shift factors."""
        config = self.vae.config
        scaled = latents.to(self.vae.dtype) / config.scaling_factor + (config.shift_factor or 0.0)
        image = self.vae.decode(scaled, return_dict=False)[0]
        image = (image * 0.5 + 0.5).clamp(0, 1)
        array = image.cpu().permute(0, 2, 3, 1).float().numpy()
        return (array * 255).round().astype(np.uint8)

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """Shifted schedule (num_steps + 1,) float32 on the family's device, ending at 0; timesteps = sigma * 1000."""
        if num_steps < 1:
            raise ValueError(f"num_steps={num_steps}; expected >= 1")
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler.config)
        options: dict[str, float] = {}
        if scheduler.config.get("use_dynamic_shifting", False):
            # resolution-dependent shift, as StableDiffusion3Pipeline computes it (SD3.5 itself uses shift 3)
            seq_len = (self.latent_size // self.transformer.config.patch_size) ** 2
            options["mu"] = calculate_shift(
                seq_len,
                scheduler.config.get("base_image_seq_len", 256),
                scheduler.config.get("max_image_seq_len", 4096),
                scheduler.config.get("base_shift", 0.5),
                scheduler.config.get("max_shift", 1.16),
            )
        scheduler.set_timesteps(num_steps, device=self.device, **options)
        return scheduler.sigmas.to(torch.float32)
