"""Checkpoints: exact resume on a tiny SD3 transformer, atomic writes, keep-last-K, diffusers LoRA export."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from rewardflow_trainer.checkpoint import (
    TrainingState,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from rewardflow_trainer.config import LoraConfig
from rewardflow_trainer.ema import EMA
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import SD3Family
from rewardflow_trainer.models.tiny import build_tiny_sd3
from rewardflow_trainer.presets import build_config


class Tracker:
    """Stands in for the stat tracker: anything with state_dict/load_state_dict."""

    def __init__(self) -> None:
        self.rewards: dict[str, list[float]] = {}

    def state_dict(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.rewards.items()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        self.rewards = {k: list(v) for k, v in state.items()}


def _setup(lora: LoraConfig | None = None):
    transformer = build_tiny_sd3(seed=0)["transformer"]
    policy = Policy(transformer, lora, keep_reference=False, export_lora=SD3Family.save_lora_weights)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2, weight_decay=1e-4)
    ema = EMA(policy.parameters(), decay=0.9, update_every=2)
    generator = torch.Generator().manual_seed(5)
    return policy, optimizer, ema, generator


def _train_step(policy: Policy, optimizer, ema: EMA, generator: torch.Generator, step: int) -> None:
    """One update whose inputs draw from every RNG a checkpoint must restore."""
    latents = torch.randn(2, 4, 16, 16, generator=generator)
    text = torch.randn(2, 6, 32) * float(np.random.rand() + random.random())
    pooled = torch.randn(2, 32)
    out = policy.transformer(
        hidden_states=latents,
        encoder_hidden_states=text,
        pooled_projections=pooled,
        timestep=torch.tensor([500.0, 250.0]),
        return_dict=False,
    )[0]
    loss = (out - latents).pow(2).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    ema.step(step)


def _snapshot(policy: Policy) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in policy.named_parameters().items()}


def test_resume_gives_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    policy, optimizer, ema, generator = _setup()
    tracker = Tracker()
    for step in range(3):
        _train_step(policy, optimizer, ema, generator, step)
    tracker.rewards["a cat"] = [0.5, 0.25]
    save_checkpoint(
        tmp_path,
        TrainingState(epoch=3, global_step=3, extra={"note": "x"}),
        policy,
        optimizer,
        ema,
        generators={"sde": generator},
        stat_tracker=tracker,
        config=build_config(),
    )
    for step in range(3, 6):
        _train_step(policy, optimizer, ema, generator, step)
    expected, expected_ema, expected_draw = _snapshot(policy), [s.clone() for s in ema.shadow], torch.rand(3)

    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # a fresh process has other RNG states
    policy2, optimizer2, ema2, generator2 = _setup()
    tracker2 = Tracker()
    state = load_checkpoint(tmp_path, policy2, optimizer2, ema2, generators={"sde": generator2}, stat_tracker=tracker2)
    assert (state.epoch, state.global_step, state.extra) == (3, 3, {"note": "x"})
    assert (resolve_checkpoint(tmp_path) / "config.json").is_file()
    assert tracker2.rewards == {"a cat": [0.5, 0.25]}
    for step in range(state.global_step, 6):
        _train_step(policy2, optimizer2, ema2, generator2, step)
    resumed = _snapshot(policy2)
    assert resumed.keys() == expected.keys()
    assert all(torch.equal(resumed[k], expected[k]) for k in expected), "resume diverged from the straight run"
    assert all(torch.equal(a, b) for a, b in zip(ema2.shadow, expected_ema, strict=True))
    assert torch.equal(torch.rand(3), expected_draw)


def test_keeps_last_k_and_resolves_the_latest(tmp_path):
    policy, optimizer, _, _ = _setup()
    for epoch in range(1, 6):
        save_checkpoint(tmp_path, TrainingState(epoch, epoch), policy, optimizer, keep=2, export_diffusers=False)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["epoch-000004", "epoch-000005"]
    assert resolve_checkpoint(tmp_path).name == "epoch-000005"
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == names  # no temp dirs left


def test_a_failed_save_leaves_the_previous_checkpoint_untouched(tmp_path):
    policy, optimizer, _, _ = _setup()
    save_checkpoint(tmp_path, TrainingState(1, 1), policy, optimizer, export_diffusers=False)

    class Broken:
        def trainable_state_dict(self):
            return policy.trainable_state_dict()

        def save_pretrained(self, directory):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, TrainingState(2, 2), Broken(), optimizer)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["epoch-000001"]


def test_missing_checkpoint_and_rank_mismatch_say_what_to_do(tmp_path):
    policy, *_ = _setup()
    with pytest.raises(FileNotFoundError, match="expected a checkpoint dir or a run dir"):
        load_checkpoint(tmp_path, policy)
    save_checkpoint(tmp_path, TrainingState(1, 1), policy, export_diffusers=False)
    with pytest.raises(ValueError, match="RNG states of 1 process"):
        load_checkpoint(tmp_path, policy, rank=1)
    with pytest.raises(FileNotFoundError, match="has no optimizer state"):
        load_checkpoint(tmp_path, policy, optimizer=torch.optim.SGD(policy.parameters(), lr=1.0))


def test_rng_capture_restores_python_numpy_torch_and_generators():
    generators = {"torch": torch.Generator().manual_seed(1), "numpy": np.random.default_rng(2)}
    state = capture_rng_state(generators)
    first = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=generators["torch"]).item(),
        generators["numpy"].random(),
    )
    restore_rng_state(state, generators)
    again = (
        random.random(),
        np.random.rand(),
        torch.rand(1).item(),
        torch.rand(1, generator=generators["torch"]).item(),
        generators["numpy"].random(),
    )
    assert first == again


def test_lora_export_loads_with_diffusers_load_lora_weights(tmp_path):
    from diffusers import StableDiffusion3Pipeline

    policy, optimizer, ema, generator = _setup(LoraConfig(rank=4, alpha=8.0, target_modules=("to_q", "to_k", "to_v")))
    for step in range(2):
        _train_step(policy, optimizer, ema, generator, step)
    saved = save_checkpoint(tmp_path, TrainingState(2, 2), policy, optimizer, ema)
    assert (saved / "diffusers" / "pytorch_lora_weights.safetensors").is_file()

    pipe = StableDiffusion3Pipeline(**build_tiny_sd3(seed=0))
    pipe.load_lora_weights(saved / "diffusers")
    loaded = {k: v for k, v in pipe.transformer.named_parameters() if "lora_" in k}
    with ema.swapped_in():
        exported = {k: v.detach().clone() for k, v in policy.transformer.named_parameters() if "lora_" in k}
    assert len(loaded) == len(exported) > 0
    # diffusers names the loaded adapter default_0; compare by module path and A/B.
    by_module = {k.replace(".default_0.", ".default."): v for k, v in loaded.items()}
    assert all(torch.allclose(by_module[k], v) for k, v in exported.items()), "export != EMA adapter weights"
    # the raw (resume) weights are the live ones, which differ from the EMA export
    assert not all(torch.equal(by_module[k], v) for k, v in policy.named_parameters().items() if k in by_module)
