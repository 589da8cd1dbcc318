"""A frozen copy of the policy that an algorithm moves on its own schedule: DPO's synced reference, NFT's old policy.

With LoRA it is a second adapter on the same transformer (named `name`, switched in with `set_adapter`,
so no second base model is held); with full fine-tuning a frozen deep copy of the transformer.
`sync(decay)` sets `shadow = decay·shadow + (1 - decay)·policy` (decay 0: a plain copy).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import torch
from peft import LoraConfig as PeftLoraConfig

from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models.family import ModelFamily

POLICY_ADAPTER = "default"


class ShadowWeights:
    """The policy's trainable weights copied into a second adapter (LoRA) or a frozen transformer (full FT)."""

    def __init__(self, policy: Policy, name: str) -> None:
        self.policy, self.name = policy, name
        transformer = policy.transformer
        if policy.lora is not None:
            lora = policy.lora
            config = PeftLoraConfig(
                r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
            )
            with warnings.catch_warnings():  # peft warns that a second adapter is a second adapter
                warnings.simplefilter("ignore", UserWarning)
                transformer.add_adapter(config, adapter_name=name)
            transformer.set_adapter(POLICY_ADAPTER)  # add_adapter made the new one active (and trainable)
            self.module = transformer
            self._pairs = self._adapter_pairs()
        else:
            self.module = copy.deepcopy(transformer).requires_grad_(False).eval()
            shadow = dict(self.module.named_parameters())
            self._pairs = [(p, shadow[n]) for n, p in transformer.named_parameters()]
        self.sync(0.0)

    def _adapter_pairs(self) -> list[tuple[torch.nn.Parameter, torch.nn.Parameter]]:
        params = dict(self.policy.transformer.named_parameters())
        marker = f".{POLICY_ADAPTER}."
        pairs = [(p, params[n.replace(marker, f".{self.name}.")]) for n, p in params.items() if marker in n]
        if not pairs:
            raise ValueError(f"ShadowWeights({self.name!r}): the transformer has no '{POLICY_ADAPTER}' adapter weights")
        return pairs

    @torch.no_grad()
    def sync(self, decay: float) -> None:
        """`shadow = decay·shadow + (1 - decay)·policy`, in place; decay in [0, 1]."""
        if not 0 <= decay <= 1:
            raise ValueError(f"ShadowWeights.sync: decay = {decay}, expected in [0, 1]")
        for source, target in self._pairs:
            target.mul_(decay).add_(source.detach().to(target.dtype), alpha=1 - decay)

    @contextmanager
    def active(self) -> Iterator[torch.nn.Module]:
        """The module to run for a forward pass with the shadow weights."""
        if self.policy.lora is None:
            yield self.module
            return
        self.module.set_adapter(self.name)
        try:
            yield self.module
        finally:
            self.module.set_adapter(POLICY_ADAPTER)


@contextmanager
def sampling_with(family: ModelFamily, module_context: AbstractContextManager[torch.nn.Module]) -> Iterator[None]:
    """Rollouts drawn with another module: the family's transformer swapped for `module_context`'s while inside."""
    original = family.transformer
    with module_context as module:
        family.transformer = module
        try:
            yield
        finally:
            family.transformer = original
