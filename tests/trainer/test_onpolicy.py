"""The GRPO update on the tiny random SD3: on-policy ratio, KL before the update, where gradients go."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from rewardflow_trainer.config import LoraConfig
from rewardflow_trainer.grpo import GRPOUpdater, UpdateSettings
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import Guidance, SD3Family
from rewardflow_trainer.sampling import Trajectory, sample_trajectories

NUM_STEPS = 4
# Adapter on attention, output projection and feed-forward: every such module gets a gradient.
LORA = LoraConfig(rank=4, alpha=8.0, target_modules=("to_q", "to_k", "to_v", "to_out.0", "proj_out", "ff.net.2"))


def _setup(
    family: SD3Family, lora: LoraConfig | None, beta: float, steps_per_update: int, lr: float = 1e-2
) -> tuple[GRPOUpdater, Policy, Accelerator]:
    policy = Policy(family.transformer, lora, keep_reference=beta > 0)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr)
    accelerator = Accelerator(cpu=True)
    accelerator.gradient_accumulation_steps = steps_per_update
    model, optimizer = accelerator.prepare(family.transformer, optimizer)
    settings = UpdateSettings(clip_range=0.2, beta=beta, max_grad_norm=1.0, num_trained_steps=NUM_STEPS - 1)
    return (
        GRPOUpdater(family, model, policy, optimizer, accelerator, settings, Guidance(4.5, True)),
        policy,
        accelerator,
    )


def _rollout(family: SD3Family, prompts: list[str], seed: int = 0) -> Trajectory:
    return sample_trajectories(
        family,
        prompts,
        num_steps=NUM_STEPS,
        guidance=Guidance(4.5, True),
        noise_level=0.7,
        generator=torch.Generator().manual_seed(seed),
    )


ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.5])


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_ratio_is_exactly_one_before_the_first_update(tiny_family: SD3Family, tiny_prompts: list[str], lora) -> None:
    # One batch per epoch, no accumulation across minibatches: one optimizer step after all trained steps.
    updater, _, _ = _setup(tiny_family, lora, beta=0.0, steps_per_update=NUM_STEPS - 1)
    batch = _rollout(tiny_family, tiny_prompts)
    updater.begin_epoch()
    first = updater.minibatch(batch, ADVANTAGES)
    assert first["ratio_dev_on_policy"] == [0.0] * (NUM_STEPS - 1)
    assert first["ratio_mean"] == [1.0] * (NUM_STEPS - 1)
    assert first["clipfrac"] == [0.0] * (NUM_STEPS - 1)
    assert updater.global_step == 1
    # The check can fail: after the update the same samples are off-policy.
    second = updater.minibatch(batch, ADVANTAGES)
    assert "ratio_dev_on_policy" not in second
    assert all(r != 1.0 for r in second["ratio_mean"])


def test_ratio_moves_after_a_per_step_update(tiny_family: SD3Family, tiny_prompts: list[str]) -> None:
    # With an optimizer step after every trained step only step 0 is on-policy.
    updater, _, _ = _setup(tiny_family, None, beta=0.0, steps_per_update=1)
    updater.begin_epoch()
    info = updater.minibatch(_rollout(tiny_family, tiny_prompts), ADVANTAGES)
    assert info["ratio_dev_on_policy"] == [0.0]
    assert info["ratio_mean"][0] == 1.0
    assert all(r != 1.0 for r in info["ratio_mean"][1:])
    assert updater.global_step == NUM_STEPS - 1


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_kl_is_zero_before_the_first_update_and_positive_after(
    tiny_family: SD3Family, tiny_prompts: list[str], lora
) -> None:
    updater, _, _ = _setup(tiny_family, lora, beta=0.05, steps_per_update=NUM_STEPS - 1)
    batch = _rollout(tiny_family, tiny_prompts)
    updater.begin_epoch()
    assert updater.minibatch(batch, ADVANTAGES)["kl"] == [0.0] * (NUM_STEPS - 1)
    after = updater.minibatch(batch, ADVANTAGES)["kl"]
    assert all(kl > 0 for kl in after)


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_gradients_reach_only_trainable_parameters(tiny_family: SD3Family, tiny_prompts: list[str], lora) -> None:
    # Accumulate without stepping so the gradients stay readable; beta > 0 runs the reference pass too.
    updater, policy, _ = _setup(tiny_family, lora, beta=0.05, steps_per_update=10_000)
    trainable = policy.named_parameters()
    with torch.no_grad():  # LoRA B starts at 0, which zeroes A's gradient: start from a trained-looking B
        for name, param in trainable.items():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    updater.begin_epoch()
    updater.minibatch(_rollout(tiny_family, tiny_prompts), ADVANTAGES)
    assert trainable, "nothing is trainable"
    if lora is not None:
        assert all("lora_" in name for name in trainable)
    else:
        assert len(trainable) == len(list(tiny_family.transformer.parameters()))
    # The last block is context_pre_only: its context queries only feed context outputs that are
    # discarded, so add_q_proj there gets an all-zero gradient by construction.
    dead = "transformer_blocks.1.attn.add_q_proj"
    assert all(p.grad is not None for p in trainable.values())
    no_grad = [n for n, p in trainable.items() if not torch.any(p.grad != 0) and not n.startswith(dead)]
    assert not no_grad, f"trainable parameters without gradient: {no_grad[:5]}"
    frozen_modules = {
        "vae": tiny_family.vae,
        "text_encoder": tiny_family.text_encoder,
        "text_encoder_2": tiny_family.text_encoder_2,
        "text_encoder_3": tiny_family.text_encoder_3,
    }
    if lora is not None:
        frozen_modules["transformer (base)"] = tiny_family.transformer
    else:
        with policy.reference() as reference:
            frozen_modules["reference copy"] = reference
    for name, module in frozen_modules.items():
        own = trainable if module is tiny_family.transformer else {}
        leaked = [n for n, p in module.named_parameters() if n not in own and p.grad is not None]
        assert not leaked, f"{name}: gradient reached frozen parameters {leaked[:5]}"
        assert not any(p.requires_grad for n, p in module.named_parameters() if n not in own), name


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_an_update_changes_only_trainable_parameters(tiny_family: SD3Family, tiny_prompts: list[str], lora) -> None:
    updater, policy, _ = _setup(tiny_family, lora, beta=0.05, steps_per_update=NUM_STEPS - 1)
    everything = {
        f"{part}.{n}": p.detach().clone()
        for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
        for n, p in getattr(tiny_family, part).named_parameters()
    }
    trainable = {f"transformer.{n}" for n in policy.named_parameters()}
    updater.begin_epoch()
    updater.minibatch(_rollout(tiny_family, tiny_prompts), ADVANTAGES)
    after = {
        f"{part}.{n}": p.detach()
        for part in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3")
        for n, p in getattr(tiny_family, part).named_parameters()
    }
    changed = {n for n in everything if not torch.equal(everything[n], after[n])}
    assert changed, "the update changed nothing"
    assert changed <= trainable, f"frozen parameters changed: {sorted(changed - trainable)[:5]}"
    if lora is not None:
        # LoRA B starts at 0: the first update moves B (A only gets gradient once B is non-zero).
        assert any("lora_B" in n for n in changed)
