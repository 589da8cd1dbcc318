"""What the packed-latent families (FLUX, Qwen-Image) share: 2x2 latent packing, per-seed noise, the
resolution-dependent schedule and a per-prompt embedding cache.

Both diffusers pipelines (FluxPipeline, QwenImagePipeline) draw the latent noise unpacked, (B, C, h, w), then
pack each 2x2 patch into one token: (B, h/2 * w/2, 4C). Their schedules are `linspace(1, 1/T, T)` shifted by
`mu = calculate_shift(tokens, ...)` read from the scheduler config (docs/algorithm.md, "Flow convention").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from rewardflow_trainer.models.sd3 import calculate_shift

Row = TypeVar("Row")

# The defaults FluxPipeline and QwenImagePipeline use when a scheduler config lacks the key.
SHIFT_DEFAULTS = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): each 2x2 patch becomes one token, channel-major within the token."""
    batch, channels, height, width = latents.shape
    patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, h/2 * w/2, 4C) -> (B, C, h, w), the inverse of `pack` (h, w are latent sizes)."""
    batch, _, packed_channels = tokens.shape
    patches = tokens.reshape(batch, height // 2, width // 2, packed_channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, packed_channels // 4, height, width)


def packed_noise(
    batch_size: int,
    shape: tuple[int, int, int],
    device: torch.device,
    *,
    generator: torch.Generator | None = None,
    seeds: Sequence[int] | None = None,
) -> torch.Tensor:
    """Standard normal latents drawn unpacked with `shape` (C, h, w), then packed; float32 on `device`.

    With `seeds` each sample draws from its own CPU generator: the noise a diffusers pipeline draws when
    given `generator=[torch.Generator().manual_seed(s) for s in seeds]`, so equal seeds give equal noise.
    """
    if seeds is not None:
        if len(seeds) != batch_size:
            raise ValueError(f"seeds has {len(seeds)} entries; expected batch_size={batch_size}")
        draws = [
            torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=torch.float32) for s in seeds
        ]
        return pack(torch.stack(draws)).to(device)
    where = generator.device if generator is not None else torch.device("cpu")
    noise = torch.randn((batch_size, *shape), generator=generator, device=where, dtype=torch.float32)
    return pack(noise).to(device)


def shifted_sigmas(config: dict, num_steps: int, image_tokens: int, device: torch.device) -> torch.Tensor:
    """The pipelines' schedule, (T + 1,) float32: linspace(1, 1/T, T) shifted with mu from `image_tokens`."""
    if num_steps < 1:
        raise ValueError(f"num_steps={num_steps}; expected >= 1")
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    options = {key: scheduler.config.get(key, value) for key, value in SHIFT_DEFAULTS.items()}
    mu = calculate_shift(
        image_tokens,
        options["base_image_seq_len"],
        options["max_image_seq_len"],
        options["base_shift"],
        options["max_shift"],
    )
    sigmas = None if scheduler.config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / num_steps, num_steps)
    scheduler.set_timesteps(num_steps, device=device, sigmas=sigmas, mu=mu)
    return scheduler.sigmas.to(torch.float32)


def model_timestep(sigma: torch.Tensor, num_train_timesteps: int, dtype: torch.dtype) -> torch.Tensor:
    """The pipelines' transformer input: the scheduler's timestep (sigma * 1000) cast to the compute dtype, / 1000."""
    return (sigma.to(torch.float32) * num_train_timesteps).to(dtype) / 1000


class PromptCache(Generic[Row]):
    """Per-prompt rows (LRU, `size` prompts): a prompt is encoded alone, so its embedding never depends on its batch."""

    def __init__(self, encode_one: Callable[[str], Row], size: int = 1024) -> None:
        self.encode_one, self.size = encode_one, size
        self._rows: OrderedDict[str, Row] = OrderedDict()

    def rows(self, prompts: Sequence[str]) -> list[Row]:
        """The cached (or newly encoded) row of every prompt, in order."""
        out = []
        for prompt in prompts:
            if prompt in self._rows:
                self._rows.move_to_end(prompt)
            else:
                self._rows[prompt] = self.encode_one(prompt)
                while len(self._rows) > self.size:
                    self._rows.popitem(last=False)
            out.append(self._rows[prompt])
        return out


def decoded_to_uint8(image: torch.Tensor) -> np.ndarray:
    """VAE output in [-1, 1], (B, 3, H, W) -> uint8 (B, H, W, 3), as the pipelines' image processor rounds it."""
    image = (image * 0.5 + 0.5).clamp(0, 1)
    array = image.cpu().permute(0, 2, 3, 1).float().numpy()
    return (array * 255).round().astype(np.uint8)
