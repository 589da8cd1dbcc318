"""Model families behind one seam (family.py); a family is found by name in FAMILIES."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from rewardflow_trainer.models.family import FamilyLoader, Guidance, ModelFamily, PromptEmbeds
from rewardflow_trainer.models.flux import FluxFamily
from rewardflow_trainer.models.qwen_image import QwenImageFamily
from rewardflow_trainer.models.sd3 import SD3Family

FAMILIES: dict[str, FamilyLoader] = {"sd3": SD3Family, "flux": FluxFamily, "qwen_image": QwenImageFamily}

__all__ = [
    "FAMILIES",
    "FamilyLoader",
    "FluxFamily",
    "Guidance",
    "ModelFamily",
    "PromptEmbeds",
    "QwenImageFamily",
    "SD3Family",
    "family_class",
    "load_family",
]


def family_class(name: str) -> FamilyLoader:
    """The family registered as `name`."""
    if name not in FAMILIES:
        raise ValueError(f"model family {name!r} is not known; expected one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def load_family(
    name: str,
    model: str | Path | None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    seed: int = 0,
    **options: Any,
) -> ModelFamily:
    """`model` None or "tiny": the tiny random model built from `seed`; else a hub id or local checkpoint."""
    cls = family_class(name)
    if model is None or str(model) == "tiny":
        return cls.tiny(seed, device=device, dtype=dtype, **options)
    return cls.from_pretrained(model, dtype=dtype, device=device, **options)
