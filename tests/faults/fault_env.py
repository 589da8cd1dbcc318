"""The environment of a service that serves tests/faults/fault_scorers.py (importable without tests/services)."""

from __future__ import annotations

import os
from pathlib import Path

FAULTS_DIR = Path(__file__).resolve().parent
SERVICES_DIR = FAULTS_DIR.parent / "services"


def scorer_env(**extra: str) -> dict[str, str]:
    """PYTHONPATH for fault_scorers (and tests/services' ProbeScorer it builds on), plus `extra`."""
    return {"PYTHONPATH": os.pathsep.join([str(FAULTS_DIR), str(SERVICES_DIR)]), **extra}
