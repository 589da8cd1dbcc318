"""Fixtures for the static deployment checks: the repository root and the parsed compose file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root folder (the Docker build context)."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def compose_text() -> str:
    """compose.yaml as written."""
    return (REPO_ROOT / "compose.yaml").read_text()


@pytest.fixture(scope="session")
def compose(compose_text: str) -> dict[str, Any]:
    """compose.yaml parsed, anchors and merge keys resolved."""
    return yaml.safe_load(compose_text)
