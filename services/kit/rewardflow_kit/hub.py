"""The Hugging Face cache and hub, as every part sees them: where the cache is, what it holds, whether the hub
answers, and what a service or a training preset needs from it (`RequiredModel`).

huggingface_hub is imported only inside the functions that need it: the kit itself does not depend on it
(the torch services, the trainer and `rewardflow models` do).
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class RequiredModel:
    """A hub repository (or the part of it) that a service or a preset loads.

    `required` are file patterns that must each match a file for the model to count as present; a pattern
    'a|b' takes the first alternative the repository has (model.safetensors, else pytorch_model.bin).
    `optional` patterns are fetched too when the repository has them (tokenizer and processor files).
    """

    repo_id: str
    required: tuple[str, ...] = ("config.json", "model.safetensors|pytorch_model.bin")
    optional: tuple[str, ...] = ("*.json", "*.txt")
    revision: str | None = None
    purpose: str = "model"
    setting: str = "REWARDFLOW_MODEL"
    """The setting (or config key) that names it, to say what to change."""
    gated: bool = False
    """The repository asks users to accept a license and log in before downloading."""
    notes: tuple[str, ...] = field(default=())


def is_hub_id(name: str | None) -> bool:
    """Whether `name` is a Hugging Face id ('org/name' or 'name') rather than a local path or nothing."""
    if not name:
        return False
    if Path(name).expanduser().exists() or name.startswith(("/", "./", "../", "~")):
        return False
    return name.count("/") <= 1 and " " not in name


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else huggingface_hub's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str, revision: str | None = None, repo_type: str = "model") -> Path | None:
    """The cache's snapshot folder of `repo_id` at `revision` (default main), or None when it holds none."""
    repo = hub_cache_dir() / f"{repo_type}s--{repo_id.replace('/', '--')}"
    revision = revision or "main"
    if _COMMIT.match(revision):
        commit = revision
    else:
        ref = repo / "refs" / revision
        if not ref.is_file():
            return None
        commit = ref.read_text().strip()
    snapshot = repo / "snapshots" / commit
    return snapshot if snapshot.is_dir() and any(snapshot.iterdir()) else None


def snapshot_files(snapshot: Path) -> list[str]:
    """The files of a snapshot folder, as repository paths ('vae/config.json')."""
    return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())


def missing_files(model: RequiredModel) -> list[str] | None:
    """None when the model is not in the cache at all, else its required patterns that no cached file matches."""
    snapshot = cached_snapshot(model.repo_id, model.revision)
    if snapshot is None:
        return None
    files = snapshot_files(snapshot)
    return [p for p in model.required if not any(fnmatch.filter(files, alt) for alt in p.split("|"))]


def resolve_patterns(model: RequiredModel, repo_files: list[str]) -> list[str]:
    """The download patterns for a repository's file list: the first alternative of each required pattern that
    it has (or all of them when none matches, so the download says what is missing), plus the optional ones."""
    patterns = []
    for pattern in model.required:
        alternatives = pattern.split("|")
        present = [alt for alt in alternatives if fnmatch.filter(repo_files, alt)]
        patterns += present[:1] or alternatives
    return list(dict.fromkeys([*patterns, *model.optional]))


@functools.cache
def hub_unreachable() -> str | None:
    """None when the hub's endpoint answers (any HTTP status), else why not, e.g. 'ConnectError: ...'.

    One HEAD request without retries, within HF_HUB_ETAG_TIMEOUT seconds (huggingface_hub's own setting for
    its metadata requests), through huggingface_hub's session (its proxies and headers); asked once per process.
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except Exception as exc:  # any transport error of any HTTP library version means: no answer
        return " ".join(f"{type(exc).__name__}: {exc}".split())
    return None


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set to a true value: the cache only."""
    values = (os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(value in {"1", "true", "yes", "on"} for value in values)


def unavailable_reason(repo_id: str, revision: str | None = None) -> str | None:
    """Why a hub id that is not cached cannot be downloaded now ('HF_HUB_OFFLINE=1 ...', 'the hub ... is
    unreachable (...)'), or None when it is cached or the hub answers."""
    if cached_snapshot(repo_id, revision) is not None:
        return None
    if hub_offline():
        return "HF_HUB_OFFLINE=1 keeps the hub offline"
    problem = hub_unreachable()
    if problem is None:
        return None
    from huggingface_hub import constants

    return f"the hub {constants.ENDPOINT} is unreachable ({problem})"
