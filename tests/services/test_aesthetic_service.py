"""The aesthetic service: the released head's layout loads exactly; scores equal an independent CLIP + MLP pass."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from rewardflow_aesthetic import AestheticHead, load_head
from rewardflow_aesthetic.head import HEAD_KEYS
from rewardflow_proto import ScoreRequest
from safetensors.torch import save_file
from service_calls import score
from torch import nn
from vision_clip_fixtures import (
    SHORTEST_EDGE,
    photo_like,
    reference_image_embeddings,
    service_env,
    write_aligned_clip,
    write_clip_dir,
)

ATOL = 1e-4  # ratings; same pixels reach the model, float32 noise only


def released_mlp(input_size: int) -> nn.Sequential:
    """improved-aesthetic-predictor simple_inference.py's MLP, rebuilt as `layers` (its ReLUs are commented out)."""
    return nn.Sequential(
        nn.Linear(input_size, 1024),
        nn.Dropout(0.2),
        nn.Linear(1024, 128),
        nn.Dropout(0.2),
        nn.Linear(128, 64),
        nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )


def released_state_dict(input_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict with the released file's key names (`layers.N.*` of the Lightning module)."""
    torch.manual_seed(seed)
    holder = nn.Module()
    holder.layers = released_mlp(input_size)
    return holder.state_dict()


def test_released_key_names_load_with_nothing_missing_or_unexpected(tmp_path: Path) -> None:
    state = released_state_dict(768)
    assert tuple(state) == HEAD_KEYS
    assert tuple(AestheticHead().state_dict()) == HEAD_KEYS
    torch.save(state, tmp_path / "sac+logos+ava1-l14-linearMSE.pth")
    save_file(state, tmp_path / "head.safetensors")
    embeddings = torch.nn.functional.normalize(torch.randn(4, 768), dim=-1)
    holder = nn.Module()
    holder.layers = released_mlp(768)
    holder.load_state_dict(state)
    expected = holder.layers.eval()(embeddings).squeeze(-1)
    for name in ("sac+logos+ava1-l14-linearMSE.pth", "head.safetensors"):
        head = load_head(tmp_path / name)
        assert head.input_size == 768 and not head.training
        torch.testing.assert_close(head(embeddings), expected)


def test_a_lightning_checkpoint_or_wrong_keys_are_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": released_state_dict(8), "epoch": 3}, tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match=r"REWARDFLOW_HEAD=.*\['state_dict', 'epoch'\] are not tensors"):
        load_head(tmp_path / "ckpt.pth")
    state = released_state_dict(8)
    state["layers.1.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"unexpected \['layers.1.weight'\]"):
        load_head(tmp_path / "extra.pth")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip_dir(tmp_path_factory.mktemp("aesthetic-clip"), seed=5)


@pytest.fixture(scope="module")
def head_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("head") / "head.pth"
    # The tiny CLIP's embeddings are 16-d. Default init shrinks the output through 5 layers (spread ~3e-3):
    # scale each weight by 4 so ratings spread over a few units, like the released head's 1-10.
    state = {k: v * 4 if k.endswith("weight") else v for k, v in released_state_dict(16, seed=1).items()}
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def aesthetic_url(module_service_process: Callable, clip_dir: Path, head_path: Path) -> str:
    return module_service_process("aesthetic", env=service_env(clip_dir, REWARDFLOW_HEAD=str(head_path))).url


def reference_ratings(clip_dir: Path, head_path: Path, images: np.ndarray) -> np.ndarray:
    holder = nn.Module()
    holder.layers = released_mlp(16)
    holder.load_state_dict(torch.load(head_path, weights_only=True))
    with torch.no_grad():
        return holder.layers.eval()(reference_image_embeddings(clip_dir, images)).squeeze(-1).double().numpy()


def test_scores_equal_clip_embedding_through_the_head(aesthetic_url: str, clip_dir: Path, head_path: Path) -> None:
    images = photo_like(5, SHORTEST_EDGE, SHORTEST_EDGE, seed=6)
    response = score(aesthetic_url, ScoreRequest(images=images, prompts=["ignored"] * 5))
    expected = reference_ratings(clip_dir, head_path, images)
    np.testing.assert_allclose(response.scores["score"], expected, rtol=0, atol=ATOL)
    assert np.ptp(expected) > 100 * ATOL
    info = httpx.get(aesthetic_url + "/v1/info", timeout=10).json()
    assert (info["name"], info["score_keys"]) == ("aesthetic", ["score"])


@pytest.mark.slow
def test_image_along_the_heads_direction_scores_the_maximum(
    service_process: Callable, clip_dir: Path, head_path: Path, tmp_path: Path
) -> None:
    # The head has no activations: rating(e) = w . e + b, largest over unit e at e = w / |w|, where it is |w| + b.
    head = load_head(head_path)
    layers = [head.layers[i] for i in (0, 2, 4, 6, 7)]
    w, b = torch.eye(16), torch.zeros(16)
    for layer in layers:
        w, b = layer.weight @ w, layer.weight @ b + layer.bias
    w, b = w[0].detach(), float(b[0])
    images = photo_like(4, SHORTEST_EDGE, SHORTEST_EDGE, seed=12)
    aligned = write_aligned_clip(clip_dir, tmp_path / "aligned", images[:1], (w / w.norm())[None])
    env = service_env(aligned, REWARDFLOW_HEAD=str(head_path))
    ratings = score(service_process("aesthetic", env=env).url, ScoreRequest(images=images, prompts=[""] * 4))
    assert np.argmax(ratings.scores["score"]) == 0
    assert ratings.scores["score"][0] == pytest.approx(float(w.norm()) + b, abs=ATOL)


@pytest.mark.slow
def test_missing_or_mismatched_head_keeps_the_service_up_and_not_ready(
    service_process: Callable, clip_dir: Path, tmp_path: Path
) -> None:
    stay = {"REWARDFLOW_STAY_UP_ON_LOAD_ERROR": "1"}  # by default the service would exit with the reason
    missing = service_process("aesthetic", env=service_env(clip_dir, **stay), wait="/healthz")
    big_head = tmp_path / "head768.pth"
    torch.save(released_state_dict(768), big_head)
    env = service_env(clip_dir, REWARDFLOW_HEAD=str(big_head), **stay)
    mismatched = service_process("aesthetic", env=env, wait="/healthz")
    for service, expected in [(missing, "REWARDFLOW_HEAD is not set"), (mismatched, "takes 768-d embeddings")]:
        for _ in range(600):
            reply = httpx.get(service.url + "/readyz", timeout=5)
            if expected in reply.text:
                break
            time.sleep(0.1)
        assert reply.status_code == 503 and expected in reply.text, reply.text
        assert service.alive()
