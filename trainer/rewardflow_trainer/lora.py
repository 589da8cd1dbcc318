"""What is trained: a peft LoRA adapter on the transformer, or the whole transformer; and the reference."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

if TYPE_CHECKING:
    from rewardflow_trainer.config import LoraConfig

LORA_WEIGHTS_NAME = "pytorch_lora_weights.safetensors"
"""The file name diffusers' `load_lora_weights` looks for."""


class Policy:
    """The trainable transformer and its frozen reference (the adapter switched off, or a frozen copy).

    With `lora` set, the base weights are frozen and an adapter named "default" is added through
    diffusers' peft integration (the transformer stays a diffusers model, so sampling code is
    unchanged), its A matrices drawn from `seed`; the reference is the same module with the adapter
    disabled. Without it every parameter trains and the reference is a deep copy taken now, frozen,
    kept for the KL term only when `keep_reference` (it doubles the memory).
    """

    def __init__(
        self,
        transformer: torch.nn.Module,
        lora: LoraConfig | None,
        keep_reference: bool = True,
        seed: int = 0,
        export_lora: Callable[[Path, dict[str, torch.Tensor], dict[str, Any]], None] | None = None,
    ) -> None:
        self.transformer = transformer
        self.lora = lora
        self.export_lora = export_lora  # the family's `save_lora_weights`: its pipeline's LoRA file format
        self._frozen: torch.nn.Module | None = None
        if lora is not None:
            transformer.requires_grad_(False)
            config = PeftLoraConfig(
                r=lora.rank,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                init_lora_weights="gaussian",  # B = 0: the adapter starts as the identity
                target_modules=list(lora.target_modules),
            )
            # A's random init comes from `seed`, not from whatever the global RNG went through before.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                transformer.add_adapter(config)
            if not self.parameters():
                raise ValueError(
                    f"train.lora.target_modules={list(lora.target_modules)!r} matched no module of "
                    f"{type(transformer).__name__}: expected names such as to_q, to_k, to_v, to_out.0"
                )
        else:
            transformer.requires_grad_(True)
            if keep_reference:
                self._frozen = copy.deepcopy(transformer).requires_grad_(False).eval()

    def parameters(self) -> list[torch.nn.Parameter]:
        """The parameters the optimizer updates, in a fixed order."""
        return [p for p in self.transformer.parameters() if p.requires_grad]

    def named_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Trainable parameters by name (for EMA, checkpoints and tests)."""
        return {n: p for n, p in self.transformer.named_parameters() if p.requires_grad}

    @contextmanager
    def reference(self) -> Iterator[torch.nn.Module]:
        """The module to run for the reference pass: the adapter disabled, or the frozen copy."""
        if self.lora is not None:
            self.transformer.disable_adapters()
            try:
                yield self.transformer
            finally:
                self.transformer.enable_adapters()
        elif self._frozen is not None:
            yield self._frozen
        else:
            raise RuntimeError("Policy.reference(): full fine-tuning was set up with keep_reference=False")

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable weights only (adapter weights under peft's names, or the full transformer)."""
        if self.lora is not None:
            return {k: v.detach().clone() for k, v in get_peft_model_state_dict(self.transformer).items()}
        return {k: v.detach().clone() for k, v in self.transformer.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore what `trainable_state_dict` returned."""
        if self.lora is not None:
            result = set_peft_model_state_dict(self.transformer, state)
            unexpected = getattr(result, "unexpected_keys", None)
            if unexpected:
                raise ValueError(f"adapter state has unexpected keys {unexpected[:3]}: was it saved with another rank?")
        else:
            self.transformer.load_state_dict(state)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Diffusers format: `pytorch_lora_weights.safetensors` for LoRA (`load_lora_weights` reads
        it), else the full transformer's `save_pretrained` folder. Returns the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.lora is not None:
            if self.export_lora is None:
                raise ValueError(
                    "Policy.save_pretrained: a LoRA policy needs export_lora (its family's save_lora_weights)"
                )
            metadata = self.transformer.peft_config["default"].to_dict()
            self.export_lora(directory, get_peft_model_state_dict(self.transformer), metadata)
        else:
            self.transformer.save_pretrained(directory)
        return directory
