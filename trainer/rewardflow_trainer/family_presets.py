"""Presets of the FLUX and Qwen-Image families with the reference's values (yifan123/flow_grpo's config/grpo.py:
pickscore_flux, pickscore_flux_fast, pickscore_qwenimage; its train_flux.py and train_qwenimage.py for the LoRA
targets, the T5 length and the negative prompt). presets.PRESETS includes FAMILY_PRESETS.

Per-GPU batch sizes are the reference's; the reference's epoch is summed over 32 GPUs (48 prompts x 24 images for
FLUX, 32 x 16 for Qwen-Image), which the group settings below keep (the sampling batches per rank follow).
"""

from __future__ import annotations

from collections.abc import Callable

from rewardflow_trainer.config import (
    Config,
    EmaConfig,
    LoraConfig,
    ModelConfig,
    PromptConfig,
    RewardConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)

# Module names of FluxTransformer2DModel the reference's adapter wraps: attention of the double- and single-stream
# blocks, and the feed-forward layers of both streams of the double-stream blocks.
FLUX_LORA_TARGETS = (
    "attn.to_k",
    "attn.to_q",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "ff.net.0.proj",
    "ff.net.2",
    "ff_context.net.0.proj",
    "ff_context.net.2",
)
# QwenImageTransformer2DModel's: joint attention, and the image and text MLPs.
QWEN_IMAGE_LORA_TARGETS = (
    "attn.to_k",
    "attn.to_q",
    "attn.to_v",
    "attn.to_out.0",
    "attn.add_k_proj",
    "attn.add_q_proj",
    "attn.add_v_proj",
    "attn.to_add_out",
    "img_mlp.net.0.proj",
    "img_mlp.net.2",
    "txt_mlp.net.0.proj",
    "txt_mlp.net.2",
)


def _pickscore_prompts() -> PromptConfig:
    """The reference's PickScore prompt files (flow_grpo/dataset/pickscore/); override to point elsewhere."""
    return PromptConfig(train="dataset/pickscore/train.txt", eval="dataset/pickscore/test.txt")


def _flux_pickscore(preset: str, sample: SampleConfig, clip_range: float, global_std: bool) -> Config:
    """FLUX.1-dev on PickScore: 512 px, bf16, LoRA r64/a128 with the feed-forward layers, beta 0, EMA."""
    return Config(
        model=ModelConfig(
            family="flux", pretrained="black-forest-labs/FLUX.1-dev", resolution=512, mixed_precision="bf16"
        ),
        sample=sample,
        train=TrainConfig(
            beta=0.0,
            clip_range=clip_range,
            global_std=global_std,
            batch_size=3,
            timestep_fraction=0.99,
            lora=LoraConfig(rank=64, alpha=128.0, target_modules=FLUX_LORA_TARGETS),
            ema=EmaConfig(enabled=True),
        ),
        reward=RewardConfig(weights={"pickscore": 1.0}),
        prompts=_pickscore_prompts(),
        run=RunConfig(out_dir=f"runs/{preset}", eval_every=30, save_every=30, grid_every=30),
        preset=preset,
    )


def flux_pickscore() -> Config:
    """FLUX.1-dev on PickScore (reference pickscore_flux): 6 Flow-SDE steps at noise 0.9, 28 eval steps, embedded
    guidance 3.5 (no negative branch), 48 prompts x 24 images an epoch."""
    sample = SampleConfig(
        num_steps=6,
        eval_num_steps=28,
        guidance_scale=3.5,
        cfg=False,
        noise_level=0.9,
        batch_size=3,
        group_size=24,
        num_groups=48,
    )
    return _flux_pickscore("flux_pickscore", sample, clip_range=1e-4, global_std=True)


def flux_pickscore_fast() -> Config:
    """Fast variant (reference pickscore_flux_fast): CPS at noise 0.8 on an SDE window of 3 steps in (0, 3) of 6,
    clip range 1e-5, per-prompt std, beta 0."""
    sample = SampleConfig(
        num_steps=6,
        eval_num_steps=28,
        guidance_scale=3.5,
        cfg=False,
        noise_level=0.8,
        sde_type="cps",
        sde_window=(3, 0, 3),
        batch_size=3,
        group_size=24,
        num_groups=48,
    )
    return _flux_pickscore("flux_pickscore_fast", sample, clip_range=1e-5, global_std=False)


def qwen_image_pickscore() -> Config:
    """Qwen-Image on PickScore (reference pickscore_qwenimage): 10 steps with a Flow-SDE window of 2 in (0, 5) at
    noise 1.2, 50 eval steps, true CFG 4 with the negative prompt " ", 32 prompts x 16 images an epoch, LoRA
    r64/a128 with the image and text MLPs, beta 0, no EMA, gradient checkpointing, bf16."""
    return Config(
        model=ModelConfig(
            family="qwen_image",
            pretrained="Qwen/Qwen-Image",
            resolution=512,
            mixed_precision="bf16",
            gradient_checkpointing=True,
        ),
        sample=SampleConfig(
            num_steps=10,
            eval_num_steps=50,
            guidance_scale=4.0,
            cfg=True,
            noise_level=1.2,
            sde_window=(2, 0, 5),
            batch_size=4,
            group_size=16,
            num_groups=32,
            eval_batch_size=4,
        ),
        train=TrainConfig(
            beta=0.0,
            batch_size=4,
            lora=LoraConfig(rank=64, alpha=128.0, target_modules=QWEN_IMAGE_LORA_TARGETS),
            ema=EmaConfig(enabled=False),
        ),
        reward=RewardConfig(weights={"pickscore": 1.0}),
        prompts=_pickscore_prompts(),
        run=RunConfig(out_dir="runs/qwen_image_pickscore", eval_every=30, save_every=30, grid_every=30),
        preset="qwen_image_pickscore",
    )


FAMILY_PRESETS: dict[str, Callable[[], Config]] = {
    "flux_pickscore": flux_pickscore,
    "flux_pickscore_fast": flux_pickscore_fast,
    "qwen_image_pickscore": qwen_image_pickscore,
}
