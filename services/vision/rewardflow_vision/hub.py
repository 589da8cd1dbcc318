"""Whether a Hugging Face id can load here, decided before transformers tries: in the cache, or the hub reachable.

Without this, a model that is not cached on a machine that cannot reach the hub costs ~47 s of
huggingface_hub's retries (5 per file, 1+2+4+8+8 s) before the same "couldn't connect" error, and a
cached model pays the same wait before the cache is used. One request to the hub's endpoint, with the
library's own HF_HUB_ETAG_TIMEOUT, answers the question once per process.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class ModelNotCached(OSError):
    """A hub model that is neither in the local cache nor downloadable now; the message is one line."""

    missing_model = True
    """Read by the kit, which then adds `run rewardflow models pull <service>` to the message."""


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


def not_cached_error(field: str, name: str, why: str) -> ModelNotCached:
    """The one-line error for a model that is not in the cache and cannot be downloaded now."""
    where = f"not in the local Hugging Face cache ({hub_cache_dir()})"
    return ModelNotCached(f"cannot load {field}={name!r}: {where} {why}")


def load_from_cache_only(field: str, name: str, revision: str | None, offline: bool) -> bool:
    """Whether a hub id must load from the cache only: offline, or the hub unreachable while the cache has it.

    Raises ModelNotCached when the cache lacks it and it cannot be downloaded now (offline, or no hub).
    """
    cached = cached_snapshot(name, revision) is not None
    if offline:
        if not cached:
            raise not_cached_error(field, name, "and HF_HUB_OFFLINE=1 keeps the hub offline")
        return True
    problem = hub_unreachable()
    if problem is None:
        return False
    if not cached:
        from huggingface_hub import constants

        raise not_cached_error(field, name, f"and the hub {constants.ENDPOINT} is unreachable ({problem})")
    return True
