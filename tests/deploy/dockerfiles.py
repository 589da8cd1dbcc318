"""Reading Dockerfiles for the deploy tests: where they are and their instructions."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", "runs", "node_modules", "__pycache__"}


def find_dockerfiles(root: Path = REPO_ROOT) -> list[Path]:
    """All Dockerfiles in the checkout, outside virtualenvs, VCS data and run outputs."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        found += [Path(folder) / f for f in files if f == "Dockerfile" or f.endswith(".Dockerfile")]
    return sorted(found)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1] if " " in text else "") for text in logical]


def copy_sources(dockerfile: Path) -> list[str]:
    """Build-context paths that COPY/ADD instructions read (copies from another stage excluded)."""
    sources = []
    for kind, args in instructions(dockerfile):
        words = args.split()
        if kind not in ("COPY", "ADD") or any(w.startswith("--from") for w in words):
            continue
        sources += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    return sources


DOCKERFILES = find_dockerfiles()
# The reward services' images: services/<name>/Dockerfile.
SERVICE_DOCKERFILES = [p for p in DOCKERFILES if p.parent.parent == REPO_ROOT / "services"]
