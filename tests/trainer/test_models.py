"""The SD3 model family on the tiny random model: builder, text encoding, velocity/CFG, decode, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusion3Pipeline
from rewardflow_trainer.models import FAMILIES, Guidance, ModelFamily, PromptEmbeds, SD3Family, load_family
from rewardflow_trainer.models.tiny import build_tiny_sd3

WEIGHTED = ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")


def _state(components: dict) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name in WEIGHTED for k, v in components[name].state_dict().items()}


def test_tiny_builder_is_bit_identical_and_seeded() -> None:
    first, again, other = _state(build_tiny_sd3(0)), _state(build_tiny_sd3(0)), _state(build_tiny_sd3(1))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["transformer.proj_out.weight"], other["transformer.proj_out.weight"])


def test_tiny_builder_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_tiny_sd3(0)
    assert torch.equal(torch.rand(3), expected)


def test_tiny_family_has_the_design_shapes(tiny_family: SD3Family) -> None:
    assert isinstance(tiny_family, ModelFamily)
    transformer_params = sum(p.numel() for p in tiny_family.transformer.parameters())
    assert 70_000 < transformer_params < 90_000  # docs/algorithm.md, "The embedded default": ~78k
    assert tiny_family.initial_latents(2).shape == (2, 4, 16, 16)
    assert all(p.requires_grad for p in tiny_family.transformer.parameters())
    assert not any(p.requires_grad for p in tiny_family.text_encoder_3.parameters())


def test_tokenizers_know_prompt_words_and_fall_back_for_unknown_ones(tiny_family: SD3Family) -> None:
    clip = tiny_family.tokenizer("a red cat", return_tensors="pt").input_ids[0]
    assert tiny_family.tokenizer.convert_ids_to_tokens(clip.tolist())[1:4] == ["a</w>", "red</w>", "cat</w>"]
    t5 = tiny_family.tokenizer_3("a red zorblax", add_special_tokens=True).input_ids
    assert t5[-1] == tiny_family.tokenizer_3.eos_token_id and t5[2] == tiny_family.tokenizer_3.unk_token_id
    assert tiny_family.tokenizer.model_max_length == 16


def test_decode_gives_uint8_images(tiny_family: SD3Family) -> None:
    images = tiny_family.decode(tiny_family.initial_latents(3, generator=torch.Generator().manual_seed(0)))
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    assert images.std() > 0


def test_tiny_family_at_128_px_adds_a_vae_block() -> None:
    family = SD3Family.tiny(seed=0, resolution=128)
    assert family.initial_latents(1).shape == (1, 4, 16, 16)
    assert family.decode(family.initial_latents(2)).shape == (2, 128, 128, 3)


def test_decode_applies_the_vae_scaling_and_shift(tiny_family: SD3Family) -> None:
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    vae = tiny_family.vae
    with torch.no_grad():
        raw = vae.decode(latents / vae.config.scaling_factor + vae.config.shift_factor, return_dict=False)[0]
    expected = ((raw * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(tiny_family.decode(latents), expected)


def test_sigmas_are_the_shift_3_schedule_ending_at_zero(tiny_family: SD3Family) -> None:
    sigmas = tiny_family.sigmas(10)
    assert sigmas.shape == (11,) and sigmas.dtype == torch.float32
    assert sigmas[0] == 1.0 and sigmas[-1] == 0.0
    assert sigmas[1].item() == pytest.approx(0.960, abs=1e-3) and sigmas[9].item() == pytest.approx(0.009, abs=1e-3)
    smallest = 3 * 0.001 / (1 + 2 * 0.001)  # diffusers spans [1, shifted sigma_min] and shifts again
    linear = torch.linspace(1.0, smallest, 10, dtype=torch.float64)
    assert torch.allclose(sigmas[:-1].double(), 3 * linear / (1 + 2 * linear), atol=1e-6)


def test_encode_matches_diffusers_encode_prompt(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    pipe = StableDiffusion3Pipeline(**tiny_family.components())
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        tiny_prompts, None, None, device="cpu", max_sequence_length=16, do_classifier_free_guidance=True
    )
    ours = tiny_family.encode(tiny_prompts)
    ours_negative = tiny_family.negative_embeds(len(tiny_prompts))
    assert torch.allclose(ours["prompt_embeds"], embeds, atol=1e-6)
    assert torch.allclose(ours["pooled_prompt_embeds"], pooled, atol=1e-6)
    assert torch.allclose(ours_negative["prompt_embeds"], negative, atol=1e-6)
    assert torch.allclose(ours_negative["pooled_prompt_embeds"], negative_pooled, atol=1e-6)


def test_encoding_a_prompt_does_not_depend_on_its_batch(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    together = tiny_family.encode(tiny_prompts)
    fresh = SD3Family.tiny(seed=0)
    alone = PromptEmbeds.cat([fresh.encode([p]) for p in reversed(tiny_prompts)]).select([3, 2, 1, 0])
    for name in together.tensors:
        assert torch.equal(together[name], alone[name])
    assert len(together) == 4 and len(together.select(slice(1, 3))) == 2


def test_prompt_embeds_reject_mismatched_batch_sizes() -> None:
    with pytest.raises(ValueError, match="batch sizes differ"):
        PromptEmbeds({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)})


def test_cfg_velocity_is_uncond_plus_scaled_difference(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    latents = tiny_family.initial_latents(4, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((4,), 0.7)
    embeds = tiny_family.encode(tiny_prompts)
    no_cfg = Guidance(cfg=False)
    with torch.no_grad():
        guided = tiny_family.velocity(latents, sigma, embeds, Guidance(scale=4.5))
        cond = tiny_family.velocity(latents, sigma, embeds, no_cfg)
        uncond = tiny_family.velocity(latents, sigma, tiny_family.negative_embeds(4), no_cfg)
    assert torch.allclose(guided, uncond + 4.5 * (cond - uncond), atol=1e-5)
    assert not torch.allclose(guided, cond, atol=1e-3)


def test_detach_uncond_leaves_only_the_conditional_gradient(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    latents = tiny_family.initial_latents(2, generator=torch.Generator().manual_seed(0))
    sigma, embeds = torch.full((2,), 0.5), tiny_family.encode(tiny_prompts[:2])
    weight = tiny_family.transformer.proj_out.weight

    def grad(guidance: Guidance) -> torch.Tensor:
        tiny_family.transformer.zero_grad()
        tiny_family.velocity(latents, sigma, embeds, guidance).sum().backward()
        return weight.grad.clone()

    detached = grad(Guidance(scale=4.5, detach_uncond=True))
    full = grad(Guidance(scale=4.5))
    cond_only = grad(Guidance(cfg=False))
    assert torch.allclose(detached, 4.5 * cond_only, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(full, detached, rtol=1e-3)


def test_same_seeds_give_the_same_initial_noise(tiny_family: SD3Family) -> None:
    latents = tiny_family.initial_latents(4, seeds=[7, 8, 7, 9])
    assert torch.equal(latents[0], latents[2])
    assert not torch.equal(latents[0], latents[1]) and not torch.equal(latents[1], latents[3])
    with pytest.raises(ValueError, match="seeds has 2 entries; expected batch_size=3"):
        tiny_family.initial_latents(3, seeds=[1, 2])


def test_save_and_load_round_trip_offline(
    tiny_family: SD3Family, tiny_prompts: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_family.save_pretrained(tmp_path)
    assert {"transformer", "vae", "text_encoder_3", "tokenizer_3", "scheduler"} <= {p.name for p in tmp_path.iterdir()}
    loaded = load_family("sd3", tmp_path, dtype=torch.float32, device="cpu", resolution=64, max_sequence_length=16)
    latents = tiny_family.initial_latents(4, generator=torch.Generator().manual_seed(0))
    sigma = torch.full((4,), 0.6)
    with torch.no_grad():
        expected = tiny_family.velocity(latents, sigma, tiny_family.encode(tiny_prompts), Guidance())
        got = loaded.velocity(latents, sigma, loaded.encode(tiny_prompts), Guidance())
    assert torch.equal(got, expected)
    assert torch.equal(loaded.sigmas(10), tiny_family.sigmas(10))


def test_registry_and_option_errors_name_what_is_valid() -> None:
    assert set(FAMILIES) == {"sd3", "flux", "qwen_image"}
    known = r"\['flux', 'qwen_image', 'sd3'\]"
    with pytest.raises(ValueError, match=rf"model family 'flux9' is not known; expected one of {known}"):
        load_family("flux9", None)
    with pytest.raises(ValueError, match="resolution=60 must be a multiple of 8"):
        SD3Family(**build_tiny_sd3(0), resolution=60)
    with pytest.raises(ValueError, match="resolution=96 does not fit the tiny model"):
        SD3Family.tiny(seed=0, resolution=96)
    with pytest.raises(ValueError, match="num_steps=0"):
        SD3Family.tiny(seed=0).sigmas(0)
