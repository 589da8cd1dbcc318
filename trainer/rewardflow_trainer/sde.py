"""Step dynamics of the sampler (docs/algorithm.md): the Flow-GRPO SDE, coefficient-preserving sampling, the ODE.

Every step maps x at noise level sigma to x_next at sigma_next (dt = sigma_next - sigma < 0) given the
model's velocity v, and returns the Gaussian transition it sampled from: its mean, its std, the noise
scale the KL penalty divides by, and the log-probability of x_next. All of it runs in float32 whatever
the model dtype (bf16/fp16 overflow in these formulas). Given `prev_sample`, a step scores that sample
(training path); without it, it draws one with `generator` (sampling path). Both paths run the same ops.

Log-probabilities are AVERAGED over every non-batch dimension. Where a transition has std 0
(noise_level 0, the "ode" type, or the CPS step into sigma_next = 0) it is a point mass; its log-prob
is defined as 0 there (not -inf/NaN as in the reference), so such steps carry no policy gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@dataclass(frozen=True)
class StepOutput:
    """One transition. next_latents/mean: like the latents, float32; log_prob, std, noise_scale: (B,) float32."""

    next_latents: torch.Tensor
    log_prob: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor  # std of x_next given x
    noise_scale: torch.Tensor  # s of the KL: mean((mu_theta - mu_ref)^2) / (2 s^2)


def _per_sample(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, ..., 1) broadcastable against `like`."""
    return value.reshape(-1, *([1] * (like.ndim - 1)))


def _draw(
    mean: torch.Tensor, std: torch.Tensor, prev_sample: torch.Tensor | None, generator: torch.Generator | None
) -> torch.Tensor:
    if prev_sample is not None:
        return prev_sample.detach().to(torch.float32)
    device = generator.device if generator is not None else mean.device
    noise = torch.randn(mean.shape, generator=generator, device=device, dtype=torch.float32).to(mean.device)
    return mean.detach() + _per_sample(std, mean) * noise


def _batch_mean(values: torch.Tensor) -> torch.Tensor:
    return values.mean(dim=tuple(range(1, values.ndim)))


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """log N(sample; mean, std^2 I) per dimension, averaged over non-batch dims; 0 where std == 0. -> (B,)

    `-(x - mu)^2 / (2 std^2) - log(std) - log(sqrt(2 pi))`; std (B,) float32.
    """
    positive = std > 0
    safe_std = torch.where(positive, std, torch.ones_like(std))  # keeps the masked branch finite for autograd
    s = _per_sample(safe_std, mean)
    log_density = -((sample - mean) ** 2) / (2 * s**2) - torch.log(s) - _HALF_LOG_2PI
    return torch.where(positive, _batch_mean(log_density), torch.zeros_like(std))


def flow_sde_step(
    velocity: torch.Tensor,
    latents: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    sigma_second: torch.Tensor,
    noise_level: torch.Tensor,
    *,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """Flow-GRPO SDE step (`sde_type="sde"`).

    s  = a * sqrt(sigma / (1 - sigma')),  sigma' = sigma except at sigma = 1, where sigma' = sigma_second
         (the schedule's second sigma; only the denominator is substituted), a = noise_level
    mu = x * (1 + s^2 / (2 sigma) * dt) + v * (1 + s^2 (1 - sigma) / (2 sigma)) * dt
    x_next = mu + s * sqrt(-dt) * z,  z ~ N(0, I)
    log_prob = mean over dims of log N(x_next; mu, (s sqrt(-dt))^2),  noise_scale = s
    With a = 0, mu = x + v * dt bit for bit (diffusers' Euler step).
    Shapes: velocity, latents, prev_sample (B, ...); sigma, sigma_next, sigma_second, noise_level (B,).
    """
    x, v = latents.to(torch.float32), velocity.to(torch.float32)
    sig, dt = _per_sample(sigma, x), _per_sample(sigma_next - sigma, x)
    denominator_sigma = torch.where(sigma == 1, sigma_second, sigma)
    s_flat = noise_level * torch.sqrt(sigma / (1 - denominator_sigma))
    s = _per_sample(s_flat, x)
    mean = x * (1 + s**2 / (2 * sig) * dt) + v * (1 + s**2 * (1 - sig) / (2 * sig)) * dt
    std = s_flat * torch.sqrt(sigma - sigma_next)
    sample = _draw(mean, std, prev_sample, generator)
    return StepOutput(sample, gaussian_log_prob(sample, mean, std), mean, std, s_flat)


def cps_step(
    velocity: torch.Tensor,
    latents: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    sigma_second: torch.Tensor,
    noise_level: torch.Tensor,
    *,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """Coefficient-preserving step (`sde_type="cps"`).

    std = sigma_next * sin(a * pi / 2),  x0 = x - sigma v,  x1 = x + (1 - sigma) v
    mu  = x0 (1 - sigma_next) + x1 * sqrt(sigma_next^2 - std^2),  x_next = mu + std * z
    log_prob = -mean over dims of (x_next - mu)^2 (the reference's: constants and variance dropped;
    0 where std = 0),  noise_scale = std. `sigma_second` is unused (same signature as the other types).
    """
    x, v = latents.to(torch.float32), velocity.to(torch.float32)
    sig, sig_next = _per_sample(sigma, x), _per_sample(sigma_next, x)
    std = sigma_next * torch.sin(noise_level * (math.pi / 2))
    x0 = x - sig * v
    x1 = x + (1 - sig) * v
    # clamp: at a = 1 the difference is 0 up to rounding
    mean = x0 * (1 - sig_next) + x1 * torch.sqrt((sig_next**2 - _per_sample(std, x) ** 2).clamp(min=0))
    sample = _draw(mean, std, prev_sample, generator)
    log_prob = torch.where(std > 0, -_batch_mean((sample - mean) ** 2), torch.zeros_like(std))
    return StepOutput(sample, log_prob, mean, std, std)


def ode_step(
    velocity: torch.Tensor,
    latents: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    sigma_second: torch.Tensor,
    noise_level: torch.Tensor,
    *,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """Deterministic Euler step (`sde_type="ode"`): x_next = mu = x + v * dt; std 0, log_prob 0; noise ignored."""
    x, v = latents.to(torch.float32), velocity.to(torch.float32)
    mean = x + v * _per_sample(sigma_next - sigma, x)
    zeros = torch.zeros_like(sigma)
    sample = mean.detach() if prev_sample is None else prev_sample.detach().to(torch.float32)
    return StepOutput(sample, zeros, mean, zeros, zeros)


StepFn = Callable[..., StepOutput]
STEP_TYPES: dict[str, StepFn] = {"sde": flow_sde_step, "cps": cps_step, "ode": ode_step}


def step_type(sde_type: str) -> StepFn:
    """The step function registered as `sde_type`."""
    if sde_type not in STEP_TYPES:
        raise ValueError(f"sde_type={sde_type!r} is not known; expected one of {sorted(STEP_TYPES)}")
    return STEP_TYPES[sde_type]


def sde_step(
    sde_type: str,
    velocity: torch.Tensor,
    latents: torch.Tensor,
    sigma: torch.Tensor,
    sigma_next: torch.Tensor,
    sigma_second: torch.Tensor,
    noise_level: torch.Tensor,
    *,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> StepOutput:
    """Run the `sde_type` step; all scalars per sample (B,) float32 (see the step functions for the math)."""
    return step_type(sde_type)(
        velocity,
        latents,
        sigma.to(torch.float32),
        sigma_next.to(torch.float32),
        sigma_second.to(torch.float32),
        noise_level.to(torch.float32),
        prev_sample=prev_sample,
        generator=generator,
    )
