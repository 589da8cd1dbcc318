"""Reading Dockerfiles for the deploy tests: where they are and their instructions."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

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


def substitute(text: str, build_args: Mapping[str, str]) -> str:
    """`${NAME}` and `$NAME` replaced by the build argument's value (names not given are left as they are)."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: build_args.get(m.group(1) or m.group(2), m.group(0)), text)


def copy_sources(dockerfile: Path, build_args: Mapping[str, str] | None = None) -> list[str]:
    """Build-context paths that COPY/ADD instructions read (copies from another stage excluded)."""
    sources = []
    for kind, args in instructions(dockerfile):
        words = substitute(args, build_args or {}).split()
        if kind not in ("COPY", "ADD") or any(w.startswith("--from") for w in words):
            continue
        sources += [w.rstrip("/") for w in words[:-1] if not w.startswith("--")]
    return sources


def compose_builds(root: Path = REPO_ROOT) -> list[tuple[str, Path, dict[str, str]]]:
    """(compose service, Dockerfile, build args) of every service compose.yaml builds."""
    services: dict[str, Any] = yaml.safe_load((root / "compose.yaml").read_text())["services"]
    builds = []
    for name, service in services.items():
        build = service.get("build")
        if isinstance(build, dict):
            dockerfile = root / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            builds.append((name, dockerfile, {k: str(v) for k, v in (build.get("args") or {}).items()}))
    return builds


DOCKERFILES = find_dockerfiles()
# The one Dockerfile of every reward service's image; the build argument SERVICE names the service.
SERVICE_DOCKERFILE = REPO_ROOT / "services" / "Dockerfile"
