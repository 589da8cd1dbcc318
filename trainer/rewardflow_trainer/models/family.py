"""The model-family seam: what the algorithm may ask of a text-to-image flow model, and nothing more."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@dataclass(frozen=True)
class Guidance:
    """How the velocity is guided: CFG weight and branch handling (SD3, Qwen-Image) or the embedded guidance (FLUX-dev).

    SD3: `cfg=True` runs one batched [uncond, cond] pass and returns `v_u + scale * (v_c - v_u)`
    (`detach_uncond` stops gradients through the unconditional half); `cfg=False` runs the conditional
    pass only (CFG-free training). Qwen-Image: the same with its negative prompt, rescaled to the conditional
    norm (true CFG). FLUX-dev: `scale` feeds the guidance embedding and `cfg` must be False.
    """

    scale: float = 4.5
    cfg: bool = True
    detach_uncond: bool = False


@dataclass(frozen=True)
class PromptEmbeds:
    """A batch of text conditioning: named family-specific tensors, every one batch-first (B, ...)."""

    tensors: dict[str, torch.Tensor]

    def __post_init__(self) -> None:
        sizes = {name: t.shape[0] for name, t in self.tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"PromptEmbeds.tensors: batch sizes differ {sizes}; expected one batch size")

    def __len__(self) -> int:
        return next(iter(self.tensors.values())).shape[0] if self.tensors else 0

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def select(self, index: torch.Tensor | slice | Sequence[int]) -> PromptEmbeds:
        """Rows `index` of every tensor (shuffling, dropping samples, minibatches)."""
        if not isinstance(index, (slice, torch.Tensor)):
            index = torch.as_tensor(list(index), dtype=torch.long)
        return PromptEmbeds({name: t[index] for name, t in self.tensors.items()})

    def to(self, device: torch.device | str) -> PromptEmbeds:
        return PromptEmbeds({name: t.to(device) for name, t in self.tensors.items()})

    @staticmethod
    def cat(parts: Sequence[PromptEmbeds]) -> PromptEmbeds:
        """Concatenate batches along dim 0 (e.g. the sampling batches of one epoch)."""
        if not parts:
            raise ValueError("PromptEmbeds.cat: got no parts; expected at least one")
        return PromptEmbeds({name: torch.cat([p.tensors[name] for p in parts]) for name in parts[0].tensors})


@runtime_checkable
class ModelFamily(Protocol):
    """One text-to-image flow-matching model family (SD3, FLUX, Qwen-Image; docs/families.md).

    Conventions: `x_t = (1 - sigma) x_0 + sigma * noise`, sigma from 1 (noise) to 0 (image), the model
    predicts velocity. Latents handed to and returned from the family are float32 in the family's own
    latent layout (SD3: (B, C, H, W); FLUX, Qwen-Image: packed (B, seq, C)); the family casts to its compute dtype.
    """

    name: str
    transformer: torch.nn.Module  # what gets trained (LoRA or full); attribute, so wrappers may replace it
    device: torch.device
    dtype: torch.dtype  # compute dtype of the transformer inputs
    num_train_timesteps: int  # timestep = sigma * num_train_timesteps

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Text conditioning for `prompts` (cached per prompt; frozen encoders, no gradients)."""
        ...

    def initial_latents(
        self, batch_size: int, *, generator: torch.Generator | None = None, seeds: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Initial noise, float32; one seed per sample when `seeds` is given (equal seeds -> equal noise)."""
        ...

    def velocity(
        self,
        latents: torch.Tensor,
        sigma: torch.Tensor,
        embeds: PromptEmbeds,
        guidance: Guidance,
        *,
        transformer: torch.nn.Module | None = None,
    ) -> torch.Tensor:
        """Guided velocity at noise level `sigma` (B,), float32, same shape as `latents`."""
        ...

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Final latents -> uint8 images (B, H, W, 3)."""
        ...

    def sigmas(self, num_steps: int) -> torch.Tensor:
        """The scheduler's sigma schedule for `num_steps` steps, float32 (num_steps + 1,), ending at 0."""
        ...

    def save_lora_weights(self, directory: Path, lora_layers: dict[str, torch.Tensor], adapter_metadata: dict) -> None:
        """Write the transformer's LoRA weights in the format of this family's diffusers pipeline
        (its `load_lora_weights` reads them)."""
        ...


class FamilyLoader(Protocol):
    """What the registry holds for a family (its class): the two ways to build one."""

    def tiny(self, seed: int = 0, *, device: torch.device | str = "cpu", **options: Any) -> ModelFamily:
        """A tiny random model built from `seed` (tests and the embedded default)."""
        ...

    def from_pretrained(
        self, model: str | Path, *, dtype: torch.dtype, device: torch.device | str, **options: Any
    ) -> ModelFamily:
        """A hub id or local diffusers folder."""
        ...
