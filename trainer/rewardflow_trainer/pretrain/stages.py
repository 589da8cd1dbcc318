"""The two pretraining stages as step functions: a deterministic autoencoder, then flow matching.

Each step's data and noise come from `batch_seed(seed, stream, step)` alone, so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, SD3Transformer2DModel

from rewardflow_trainer.ema import EMA
from rewardflow_trainer.pretrain.data import ShapesData, batch_seed, prompts_of, to_pixels
from rewardflow_trainer.pretrain.model import family_of

VAE_STREAM, FLOW_STREAM, STATS_STREAM = 0, 1, 2


@dataclass(frozen=True)
class Hyper:
    """Optimisation settings of both stages (the prototype's, docs in weights/shapes-sd3/README.md)."""

    vae_lr: float = 1e-3
    vae_batch: int = 32
    lr: float = 1e-3
    batch: int = 64
    warmup: int = 100
    caption_dropout: float = 0.1
    ema_decay: float = 0.995
    grad_clip: float = 1.0


class VaeStage:
    """Autoencoder on deterministic latents (`latent_dist.mode()`): sampled latents did not learn (see README)."""

    name = "vae"

    def __init__(self, vae: AutoencoderKL, data: ShapesData, seed: int, hyper: Hyper) -> None:
        self.vae, self.data, self.seed, self.hyper = vae, data, seed, hyper
        self.optimizer = torch.optim.AdamW(vae.parameters(), lr=hyper.vae_lr)

    def step(self, step: int) -> float:
        """One optimizer step on batch `step`; returns the reconstruction MSE (pixels in [-1, 1])."""
        _, images = self.data.draw(self.seed, VAE_STREAM, step, self.hyper.vae_batch)
        pixels = to_pixels(images)
        self.vae.train()
        recon = self.vae.decode(self.vae.encode(pixels).latent_dist.mode()).sample
        loss = F.mse_loss(recon, pixels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())


@torch.no_grad()
def latent_stats(
    vae: AutoencoderKL, data: ShapesData, seed: int, batches: int = 8, size: int = 64
) -> tuple[float, float]:
    """(mean, std) of the encoder's latents over fresh renders: the VAE's shift_factor and 1 / scaling_factor."""
    vae.eval()
    latents = [
        vae.encode(to_pixels(data.draw(seed, STATS_STREAM, i, size)[1])).latent_dist.mode() for i in range(batches)
    ]
    values = torch.cat([z.flatten() for z in latents]).double()
    return float(values.mean()), float(values.std())


def set_latent_scale(vae: AutoencoderKL, mean: float, std: float) -> None:
    """Latents the transformer sees are (z - mean) / std ~ N(0, 1), as diffusers' SD3 pipeline scales them."""
    vae.register_to_config(shift_factor=mean, scaling_factor=1.0 / std)


class FlowStage:
    """SD3's rectified flow: x_t = (1 - t) x0 + t eps, target eps - x0, timestep 1000 t, t ~ logit-normal(0, 1)."""

    name = "transformer"

    def __init__(self, components: dict, data: ShapesData, seed: int, hyper: Hyper) -> None:
        self.transformer: SD3Transformer2DModel = components["transformer"]
        self.vae: AutoencoderKL = components["vae"]
        self.data, self.seed, self.hyper = data, seed, hyper
        self.optimizer = torch.optim.AdamW(self.transformer.parameters(), lr=hyper.lr)
        self.ema = EMA(self.transformer.parameters(), decay=hyper.ema_decay, update_every=1)
        # Frozen text encoders: every train prompt and "" (caption dropout = the CFG negative) encoded once,
        # through SD3Family.encode, the sampler's own text path.
        family = family_of(components)
        texts = ["", *prompts_of(data.train)]
        embeds = family.encode(texts)
        self.rows = {text: i for i, text in enumerate(texts)}
        self.prompt_embeds, self.pooled = embeds["prompt_embeds"], embeds["pooled_prompt_embeds"]

    def learning_rate(self, step: int) -> float:
        """Linear warm-up to `lr`, then constant (the EMA does the averaging a decay would)."""
        return self.hyper.lr * min(1.0, (step + 1) / self.hyper.warmup)

    @torch.no_grad()
    def latents(self, images: torch.Tensor) -> torch.Tensor:
        config = self.vae.config
        self.vae.eval()
        return (self.vae.encode(images).latent_dist.mode() - config.shift_factor) * config.scaling_factor

    def step(self, step: int) -> float:
        """One optimizer step on batch `step`; returns the flow-matching MSE."""
        entries, images = self.data.draw(self.seed, FLOW_STREAM, step, self.hyper.batch)
        x0 = self.latents(to_pixels(images))
        batch = x0.shape[0]
        generator = torch.Generator().manual_seed(batch_seed(self.seed, FLOW_STREAM, step))
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.sigmoid(torch.randn(batch, generator=generator))
        dropped = torch.rand(batch, generator=generator) < self.hyper.caption_dropout
        rows = torch.tensor([0 if drop else self.rows[e["prompt"]] for e, drop in zip(entries, dropped, strict=True)])
        sigma = t.view(batch, 1, 1, 1)
        self.transformer.train()
        prediction = self.transformer(
            hidden_states=(1 - sigma) * x0 + sigma * noise,
            timestep=t * 1000,
            encoder_hidden_states=self.prompt_embeds[rows],
            pooled_projections=self.pooled[rows],
            return_dict=False,
        )[0]
        loss = F.mse_loss(prediction, noise - x0)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.transformer.parameters(), self.hyper.grad_clip)
        self.optimizer.step()
        self.ema.step(step)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"flow-matching loss is {value} at step {step}; lower --lr or resume earlier")
        return value
