"""Tiny-model fixtures for the trainer tests: a random SD3-architecture family built in code, no download."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from rewardflow_trainer.models import Guidance, SD3Family

TINY_PROMPTS = (
    "a red cat",
    "a blue dog on a bench",
    "two green apples",
    "a photo of a yellow car",
)


@pytest.fixture
def tiny_family() -> SD3Family:
    """A fresh tiny SD3 family (seed 0, 64x64 images, CPU, float32); ~0.1 s to build, safe to train."""
    return SD3Family.tiny(seed=0)


@pytest.fixture
def tiny_prompts() -> list[str]:
    return list(TINY_PROMPTS)


@pytest.fixture
def cfg_guidance() -> Guidance:
    return Guidance(scale=4.5, cfg=True)


@pytest.fixture
def make_generator():
    """Factory: a seeded CPU torch.Generator."""

    def make(seed: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return make


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread, as the CLI gives the tiny model (see rewardflow_trainer.cli.cpu_threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def jpeg_url(module_service_process: Callable) -> str:
    """A jpeg service process shared by the tests of one module."""
    return module_service_process("jpeg").url
