"""Shared test set-up: markers. Fixtures live next to the tests that use them (tests/<part>/conftest.py)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a few seconds; CI runs it anyway")
    config.addinivalue_line("markers", "e2e: drives several processes end to end")
    config.addinivalue_line("markers", "gpu: needs CUDA; runs only where torch.cuda.is_available()")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
