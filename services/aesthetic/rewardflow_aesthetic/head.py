"""The LAION aesthetic predictor head (`sac+logos+ava1-l14-linearMSE`) and a safe loader for its weights."""

# Architecture from christophschuhmann/improved-aesthetic-predictor (MLP in simple_inference.py); changed:
# no pytorch-lightning base class, forward returns (N,) instead of (N, 1).

from __future__ import annotations

from pathlib import Path

import torch
from rewardflow_vision import load_state_dict_file
from torch import nn

CLIP_L14_DIM = 768
HEAD_KEYS = tuple(f"layers.{i}.{p}" for i in (0, 2, 4, 6, 7) for p in ("weight", "bias"))
"""The released state dict's keys: Linear layers at Sequential indices 0, 2, 4, 6, 7 (Dropouts between)."""


class AestheticHead(nn.Module):
    """embeddings (N, D) unit CLIP image embeddings -> (N,) predicted aesthetic rating (~1-10 for the release).

    Five Linear layers with no activation between them (the released head's ReLUs are commented out),
    so the head is an affine map of the embedding; the Dropouts only act in training.
    """

    def __init__(self, input_size: int = CLIP_L14_DIM) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings).squeeze(-1)


def load_head(path: str | Path, device: torch.device | str = "cpu", field: str = "REWARDFLOW_HEAD") -> AestheticHead:
    """The head with weights from `path` (.pth state dict via weights_only=True, or .safetensors), in float32, eval."""
    state = load_state_dict_file(path, field=field)
    missing = [key for key in HEAD_KEYS if key not in state]
    unexpected = sorted(set(state) - set(HEAD_KEYS))
    if missing or unexpected:
        raise ValueError(
            f"{field}={str(path)!r} is not an aesthetic head state dict: missing {missing}, unexpected {unexpected}; "
            f"expected exactly {list(HEAD_KEYS)} (sac+logos+ava1-l14-linearMSE.pth)"
        )
    head = AestheticHead(input_size=state["layers.0.weight"].shape[1])
    head.load_state_dict(state, strict=True)  # also checks every shape against the architecture
    return head.to(device=device, dtype=torch.float32).eval().requires_grad_(False)
