"""The root .dockerignore sends every COPY source to the build and keeps .venv, .git, tests and runs out."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import pytest
from dockerfiles import DOCKERFILES, REPO_ROOT, compose_builds, copy_sources


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex over slash-separated paths (Docker's `*`, `?` and `**`)."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def parse_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(is_exception, pattern) per rule of a .dockerignore, in file order, cleaned the way Docker cleans them."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        cleaned = posixpath.normpath(line[1:].strip() if exception else line).lstrip("/")
        rules.append((exception, compile_pattern(cleaned)))
    return rules


def is_excluded(rules: list[tuple[bool, re.Pattern[str]]], path: str) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for exception, pattern in rules:
        if any(pattern.match(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


RULES = parse_rules((REPO_ROOT / ".dockerignore").read_text())


def test_matcher_follows_dockers_last_match_wins_rule() -> None:
    rules = parse_rules("*\n!keep/\nkeep/**/secret\n")
    assert is_excluded(rules, "other/file")
    assert not is_excluded(rules, "keep/a/file.py")
    assert is_excluded(rules, "keep/a/b/secret")


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "runs/demo/metrics.jsonl",
        "bench/transport.py",
        "proto/rewardflow_proto.egg-info/PKG-INFO",
        "services/jpeg/rewardflow_jpeg/__pycache__/scorer.cpython-311.pyc",
        "services/jpeg/.venv/bin/python",
        "models/pickscore/model.safetensors",
        "trainer/rewardflow_trainer.egg-info/PKG-INFO",
        "trainer/runs/tiny_jpeg/metrics.jsonl",
        "rewardflow/__pycache__/cli.cpython-311.pyc",
    ],
)
def test_local_state_stays_out_of_the_build_context(path: str) -> None:
    assert is_excluded(RULES, path), f"{path} would be sent to the Docker daemon"


def builds() -> list[tuple[str, Path, dict[str, str]]]:
    """Each build compose.yaml runs (with its build args), plus every Dockerfile that compose does not build."""
    found = compose_builds()
    built = {dockerfile for _, dockerfile, _ in found}
    return found + [(str(p.relative_to(REPO_ROOT)), p, {}) for p in DOCKERFILES if p not in built]


BUILDS = builds()


@pytest.mark.parametrize(("name", "dockerfile", "build_args"), BUILDS, ids=[name for name, _, _ in BUILDS])
def test_every_copy_source_reaches_the_build_context(name: str, dockerfile: Path, build_args: dict[str, str]) -> None:
    where = f"{dockerfile.relative_to(REPO_ROOT)} ({name})"
    sources = copy_sources(dockerfile, build_args)
    assert sources, f"{where}: no COPY from the build context"
    for source in sources:
        assert "$" not in source, f"{where}: COPY {source}: a build argument that compose.yaml does not set"
        on_disk = REPO_ROOT / source
        assert on_disk.exists(), f"{where}: COPY {source}: no such path"
        files = [on_disk] if on_disk.is_file() else [p for p in on_disk.rglob("*") if p.is_file()]
        sent = [f for f in files if not is_excluded(RULES, f.relative_to(REPO_ROOT).as_posix())]
        assert sent, f"{where}: COPY {source}: every file is in .dockerignore"
        # A copied folder is a package: its own pyproject.toml, or (the root package) an __init__.py.
        assert any(f.name in ("pyproject.toml", "__init__.py") for f in sent) or on_disk.is_file()
