"""The Qwen-Image family on its tiny random model: QwenImagePipeline's own output at noise 0 (true CFG with the
negative prompt), float64 log-probs, the on-policy ratio, one epoch through the loop, and the LoRA round trip
through QwenImagePipeline.load_lora_weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import QwenImagePipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift, retrieve_timesteps
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
from rewardflow_trainer.family_presets import QWEN_IMAGE_LORA_TARGETS
from rewardflow_trainer.models import Guidance, PromptEmbeds, QwenImageFamily, load_family
from rewardflow_trainer.models.qwen_image import PROMPT_TEMPLATE, TEMPLATE_TOKENS
from rewardflow_trainer.models.tiny_qwen_image import build_tiny_qwen_image

STEPS = 6
GUIDANCE = Guidance(scale=4.0, cfg=True)
LORA = LoraConfig(rank=4, alpha=8.0, target_modules=QWEN_IMAGE_LORA_TARGETS)
PARTS = ("transformer", "vae", "text_encoder")


@pytest.fixture
def qwen() -> QwenImageFamily:
    return QwenImageFamily.tiny(seed=0)


def pipeline(family: QwenImageFamily) -> QwenImagePipeline:
    pipe = QwenImagePipeline(**family.components())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def trimmed(embeds: PromptEmbeds, prefix: str = "") -> dict[str, torch.Tensor]:
    """Our stored embeddings cut to the batch's longest prompt, as the family feeds them (pipeline keyword names)."""
    length = int(embeds["prompt_embeds_mask"].sum(dim=1).max())
    return {f"{prefix}{name}": tensor[:, :length] for name, tensor in embeds.tensors.items()}


def test_tiny_qwen_image_is_seeded_and_leaves_the_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, again, other = build_tiny_qwen_image(0), build_tiny_qwen_image(0), build_tiny_qwen_image(1)
    assert torch.equal(torch.random.get_rng_state(), state)
    for name in ("transformer", "vae", "text_encoder"):
        a, b, c = (dict(m[name].named_parameters()) for m in (first, again, other))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        assert not all(torch.equal(a[k], c[k]) for k in a), name


def test_the_template_prefix_is_the_34_dropped_tokens(qwen: QwenImageFamily) -> None:
    tokens = qwen.tokenizer.convert_ids_to_tokens(qwen.tokenizer(PROMPT_TEMPLATE.format("a red cat")).input_ids)
    prompt_and_closing = ["a", "red", "cat", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]
    assert tokens[TEMPLATE_TOKENS - 3 :] == ["<|im_start|>", "user", "\n", *prompt_and_closing]
    assert "<unk>" not in tokens


def test_encode_matches_qwen_image_pipeline_encode_prompt(qwen: QwenImageFamily) -> None:
    prompt_embeds, mask = pipeline(qwen).encode_prompt(list(PROMPTS), max_sequence_length=24)
    ours = qwen.encode(list(PROMPTS))
    assert ours["prompt_embeds"].shape == (4, 24, 16) and ours["prompt_embeds_mask"].dtype == torch.long
    length = prompt_embeds.shape[1]
    assert torch.equal(ours["prompt_embeds_mask"][:, :length], mask)
    assert not ours["prompt_embeds"][:, length:].any() and not ours["prompt_embeds_mask"][:, length:].any()
    # The pipeline encodes the batch right-padded, we encode each prompt alone: the causal encoder's real tokens
    # never see the padding, so only float rounding can differ.
    assert torch.allclose(ours["prompt_embeds"][:, :length], prompt_embeds * mask[..., None], rtol=0, atol=1e-5)


def test_sigmas_are_the_pipelines_resolution_shifted_schedule(qwen: QwenImageFamily) -> None:
    large = QwenImageFamily(**build_tiny_qwen_image(0, resolution=64), resolution=128)  # 32x32 latents
    for family, tokens in ((qwen, 64), (large, 256)):
        mu = calculate_shift(tokens, 256, 8192, 0.5, 0.9)
        scheduler = type(qwen.scheduler).from_config(qwen.scheduler.config)
        retrieve_timesteps(scheduler, STEPS, sigmas=np.linspace(1.0, 1 / STEPS, STEPS), mu=mu)
        assert torch.equal(family.sigmas(STEPS), scheduler.sigmas)
    assert torch.all(large.sigmas(STEPS)[1:-2] > qwen.sigmas(STEPS)[1:-2])
    assert qwen.sigmas(STEPS)[-2] == pytest.approx(0.02)  # the scheduler's shift_terminal


def test_noise_level_zero_is_qwen_image_pipeline_output_for_the_same_seeds(qwen: QwenImageFamily) -> None:
    trajectory = rollout(qwen, GUIDANCE, STEPS, noise=0.0)
    pipe = pipeline(qwen)
    seeds = [torch.Generator().manual_seed(s) for s in (11, 12, 13, 14)]
    reference = pipe(
        list(PROMPTS),
        negative_prompt=[" "] * 4,
        true_cfg_scale=4.0,
        height=64,
        width=64,
        num_inference_steps=STEPS,
        generator=seeds,
        max_sequence_length=24,
        output_type="np",
    ).images
    # The pipeline's batched prompt encoding differs from ours in float rounding only (see above): at most 1 / 255.
    assert np.abs(trajectory.images.astype(np.float64) - reference * 255).max() <= 1.0
    assert trajectory.images.std() > 0
    negative = qwen.negative_embeds(4)
    latents = pipe(
        **trimmed(qwen.encode(list(PROMPTS))),
        **trimmed(negative, "negative_"),
        true_cfg_scale=4.0,
        height=64,
        width=64,
        num_inference_steps=STEPS,
        latents=trajectory.latents[:, 0].clone(),
        output_type="latent",
    ).images
    assert torch.equal(latents, trajectory.latents[:, -1])  # the denoising loop with true CFG, bit for bit


def test_true_cfg_rescales_to_the_conditional_norm(qwen: QwenImageFamily) -> None:
    embeds, latents = qwen.encode(list(PROMPTS)), qwen.initial_latents(4, seeds=[1, 2, 3, 4])
    sigma = torch.full((4,), 0.5)
    with torch.no_grad():
        cond = qwen.velocity(latents, sigma, embeds, Guidance(4.0, cfg=False))
        guided = qwen.velocity(latents, sigma, embeds, GUIDANCE)
    assert not torch.allclose(cond, guided)
    assert torch.allclose(guided.norm(dim=-1), cond.norm(dim=-1), rtol=1e-5)


def test_detach_uncond_stops_gradients_through_the_negative_pass(qwen: QwenImageFamily) -> None:
    embeds, latents = qwen.encode(list(PROMPTS)), qwen.initial_latents(4, seeds=[1, 2, 3, 4])
    weight = qwen.transformer.proj_out.weight
    grads = []
    for detach in (False, True):
        weight.grad = None
        guidance = Guidance(4.0, cfg=True, detach_uncond=detach)
        qwen.velocity(latents, torch.full((4,), 0.5), embeds, guidance).sum().backward()
        grads.append(weight.grad.clone())
    assert not torch.allclose(grads[0], grads[1])


@pytest.mark.parametrize("sde_type", ["sde", "cps"])
def test_log_probs_match_the_float64_density(qwen: QwenImageFamily, sde_type: str) -> None:
    check_log_probs_match_float64(qwen, GUIDANCE, STEPS, sde_type)


def test_ratio_is_exactly_one_on_policy(qwen: QwenImageFamily) -> None:
    check_ratio_is_exactly_one_on_policy(qwen, GUIDANCE, LORA, steps=4)


def test_registry_builds_the_tiny_qwen_image_by_name() -> None:
    family = load_family("qwen_image", None, seed=0, resolution=64)
    assert isinstance(family, QwenImageFamily) and family.name == "qwen_image"


@pytest.mark.slow
def test_one_epoch_changes_only_the_adapter_and_the_exported_lora_loads_into_qwen_image_pipeline(
    tmp_path: Path, jpeg_url: str, one_thread: None
) -> None:
    config = epoch_config(tmp_path / "run", jpeg_url, "qwen_image", LORA, "sample.guidance_scale=4.0")
    trained, policy = check_one_epoch_changes_only_trainable(config, PARTS)
    fresh = QwenImageFamily.tiny(seed=0)
    check_exported_lora_reproduces_the_trained_model(trained, policy, fresh, pipeline, GUIDANCE, tmp_path / "lora")
