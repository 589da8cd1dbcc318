"""The FLUX family on its tiny random model: FluxPipeline's own output at noise 0, float64 log-probs, the on-policy
ratio, one epoch through the loop, and the LoRA round trip through FluxPipeline.load_lora_weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from family_contract import (
    PROMPTS,
    check_exported_lora_reproduces_the_trained_model,
    check_log_probs_match_float64,
    check_one_epoch_changes_only_trainable,
    check_ratio_is_exactly_one_on_policy,
    epoch_config,
    rollout,
)
from rewardflow_trainer.config import LoraConfig
from rewardflow_trainer.family_presets import FLUX_LORA_TARGETS
from rewardflow_trainer.models import FluxFamily, Guidance, load_family
from rewardflow_trainer.models.tiny_flux import build_tiny_flux

STEPS = 6
GUIDANCE = Guidance(scale=3.5, cfg=False)
LORA = LoraConfig(rank=4, alpha=8.0, target_modules=FLUX_LORA_TARGETS)
PARTS = ("transformer", "vae", "text_encoder", "text_encoder_2")


@pytest.fixture
def flux() -> FluxFamily:
    return FluxFamily.tiny(seed=0)


def pipeline(family: FluxFamily) -> FluxPipeline:
    pipe = FluxPipeline(**family.components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_tiny_flux_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, again, other = build_tiny_flux(0), build_tiny_flux(0), build_tiny_flux(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b, c = (dict(m[name].named_parameters()) for m in (first, again, other))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert not all(torch.equal(a[k], c[k]) for k in a), name


def test_layout_packed_latents_image_ids_and_embeddings(flux: FluxFamily) -> None:
    latents = flux.initial_latents(2, seeds=[5, 5])
    assert latents.shape == (2, 64, 16) and torch.equal(latents[0], latents[1])  # 16x16x4 packed 2x2
    assert flux.img_ids.shape == (64, 3) and flux.img_ids[9].tolist() == [0.0, 1.0, 1.0]
    embeds = flux.encode(list(PROMPTS))
    assert embeds["prompt_embeds"].shape == (4, 16, 32) and embeds["pooled_prompt_embeds"].shape == (4, 16)
    assert flux.decode(latents).shape == (2, 64, 64, 3)


def test_encode_matches_flux_pipeline_encode_prompt(flux: FluxFamily) -> None:
    prompt_embeds, pooled, text_ids = pipeline(flux).encode_prompt(list(PROMPTS), None, max_sequence_length=16)
    embeds = flux.encode(list(PROMPTS))
    assert torch.equal(embeds["prompt_embeds"], prompt_embeds)
    assert torch.equal(embeds["pooled_prompt_embeds"], pooled)
    assert torch.equal(text_ids, torch.zeros(16, 3))


def test_sigmas_are_the_pipelines_resolution_shifted_schedule(flux: FluxFamily) -> None:
    # The same tiny model at twice the side: 32x32 latents, 256 tokens instead of 64.
    large = FluxFamily(**build_tiny_flux(0, resolution=64), resolution=128)
    for family, tokens in ((flux, 64), (large, 256)):
        mu = calculate_shift(tokens, 256, 4096, 0.5, 1.15)
        scheduler = type(flux.scheduler).from_config(flux.scheduler.config)
        retrieve_timesteps(scheduler, STEPS, sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=mu)
        assert torch.equal(family.sigmas(STEPS), scheduler.sigmas)
    # More image tokens shift the schedule towards noise.
    assert torch.all(large.sigmas(STEPS)[1:-1] > flux.sigmas(STEPS)[1:-1])
    assert large.initial_latents(1).shape == (1, 256, 16)


def test_noise_level_zero_is_flux_pipeline_output_for_the_same_seeds(flux: FluxFamily) -> None:
    trajectory = rollout(flux, GUIDANCE, STEPS, noise=0.0)
    pipe = pipeline(flux)
    seeds = [torch.Generator().manual_seed(s) for s in (11, 12, 13, 14)]
    reference = pipe(
        list(PROMPTS),
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=3.5,
        generator=seeds,
        max_sequence_length=16,
        output_type="np",
    ).images
    # Images: the same float image rounded to uint8 (0.5 / 255 here); 1 / 255 leaves room for float rounding of the
    # prompt encoding (the pipeline encodes the batch at once, we encode each prompt alone).
    assert np.abs(trajectory.images.astype(np.float64) - reference * 255).max() <= 1.0
    assert trajectory.images.std() > 0
    embeds = flux.encode(list(PROMPTS))
    latents = pipe(
        prompt_embeds=embeds["prompt_embeds"],
        pooled_prompt_embeds=embeds["pooled_prompt_embeds"],
        height=64,
        width=64,
        num_inference_steps=STEPS,
        guidance_scale=3.5,
        latents=trajectory.latents[:, 0].clone(),
        output_type="latent",
    ).images
    assert torch.equal(latents, trajectory.latents[:, -1])  # the denoising loop, bit for bit


def test_guidance_scale_enters_the_embedding_and_cfg_is_refused(flux: FluxFamily) -> None:
    embeds, latents = flux.encode(list(PROMPTS)), flux.initial_latents(4, seeds=[1, 2, 3, 4])
    sigma = torch.full((4,), 0.5)
    with torch.no_grad():
        low, high = (flux.velocity(latents, sigma, embeds, Guidance(s, cfg=False)) for s in (1.0, 3.5))
    assert not torch.equal(low, high)
    with pytest.raises(ValueError, match=r"sample\.cfg = true.*sample\.cfg = false"):
        flux.velocity(latents, sigma, embeds, Guidance(3.5, cfg=True))


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_log_probs_match_the_float64_density(flux: FluxFamily, sde_type: str) -> None:
    check_log_probs_match_float64(flux, GUIDANCE, STEPS, sde_type)


def test_ratio_is_exactly_one_on_policy(flux: FluxFamily) -> None:
    check_ratio_is_exactly_one_on_policy(flux, GUIDANCE, LORA, steps=4)


def test_registry_builds_the_tiny_flux_by_name() -> None:
    family = load_family("flux", "tiny", seed=0, resolution=64)
    assert isinstance(family, FluxFamily) and family.name == "flux"


@pytest.mark.slow
def test_one_epoch_changes_only_the_adapter_and_the_exported_lora_loads_into_flux_pipeline(
    tmp_path: Path, jpeg_url: str, one_thread: None
) -> None:
    config = epoch_config(tmp_path / "run", jpeg_url, "flux", LORA, "sample.cfg=false", "sample.guidance_scale=3.5")
    trained, policy = check_one_epoch_changes_only_trainable(config, PARTS)
    fresh = FluxFamily.tiny(seed=0)
    check_exported_lora_reproduces_the_trained_model(trained, policy, fresh, pipeline, GUIDANCE, tmp_path / "lora")
