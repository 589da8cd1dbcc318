"""`rewardflow models list|pull`: the Hugging Face models each reward service and each training preset reads,
whether the local cache has them, and a download of exactly those files (sizes printed first).

What a service needs comes from its scorer's `required_models()` under the current REWARDFLOW_* settings
(rewardflow_kit.registry.service_models); what a preset needs, from rewardflow_trainer.hub_models.run_models:
the model to fine-tune and the models of the services it starts. The cache is the one huggingface_hub uses
($HF_HUB_CACHE, $HF_HOME/hub, ~/.cache/huggingface/hub): the folder compose and the chart mount read-only.
"""

from __future__ import annotations

import argparse
import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rewardflow_kit.hub import RequiredModel, hub_cache_dir, hub_offline, hub_unreachable, missing_files
from rewardflow_kit.registry import service_models, service_names
from rewardflow_proto.names import did_you_mean


class ModelsError(Exception):
    """A condition the user fixes (unknown name, no hub, gated model); printed as one line."""


ToolError = ModelsError  # what `rewardflow` turns into one line and exit code 2


@dataclass(frozen=True)
class Need:
    """One model and who needs it: a service name, or 'PRESET' / 'PRESET (service)' for a training preset."""

    who: str
    model: RequiredModel


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rewardflow models", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("list", "show each model and whether it is cached"), ("pull", "download what is missing")):
        a = sub.add_parser(action, help=text)
        a.add_argument("services", nargs="*", metavar="SERVICE", help=f"services ({', '.join(service_names())})")
        a.add_argument("--trainer", action="append", default=[], metavar="PRESET", help="a training preset's models")
        if action == "pull":
            a.add_argument("--dry-run", action="store_true", help="print what would be downloaded and its size")
    return p


def _presets() -> dict[str, Any]:
    try:
        from rewardflow_trainer.presets import PRESETS
    except ImportError as exc:
        raise ModelsError(f"--trainer needs the trainer ({exc}); install it with `pip install -e trainer`") from None
    return PRESETS


def needs(services: Sequence[str], presets: Sequence[str]) -> list[Need]:
    """Every model the named services and presets read; ModelsError for an unknown name."""
    known = service_names()
    for name in services:
        if name not in known:
            raise ModelsError(did_you_mean(name, known, "service"))
    out = [Need(name, model) for name in services for model in service_models(name)]
    if presets:
        from rewardflow_trainer.hub_models import run_models

        registry = _presets()
        for name in presets:
            if name not in registry:
                raise ModelsError(did_you_mean(name, registry, "preset"))
            for who, model in run_models(registry[name]()):
                out.append(Need(name if who == "model.pretrained" else f"{name} ({who})", model))
    return out


def status(model: RequiredModel) -> str:
    """'cached', 'missing' or 'incomplete (no file for ...)' in the local cache."""
    missing = missing_files(model)
    if missing is None:
        return "missing"
    return f"incomplete (no file for {', '.join(missing)})" if missing else "cached"


def cmd_list(services: Sequence[str], presets: Sequence[str]) -> int:
    """One line per (who, model) with its cache status; exit code 1 when something is not cached."""
    rows = needs(services, presets)
    print(f"Hugging Face cache: {hub_cache_dir()}")
    names = [*services, *presets]
    width = max([len(r.who) for r in rows] + [len(n) for n in names])
    repo_width = max([len(r.model.repo_id) for r in rows] + [len("-")])
    complete = True
    for name in names:
        mine = [r for r in rows if r.who == name or r.who.startswith(f"{name} (")]
        if not mine:
            print(f"{name:<{width}}  {'-':<{repo_width}}  nothing from the hub")
        for row in mine:
            state = status(row.model)
            complete &= state == "cached"
            what = f"{row.model.purpose} ({row.model.setting})"
            gated = "; gated: accept its license on the hub and log in" if row.model.gated and state != "cached" else ""
            print(f"{row.who:<{width}}  {row.model.repo_id:<{repo_width}}  {state:<8}  {what}{gated}")
            for note in row.model.notes:
                print(f"{'':<{width}}  note: {note}")
    return 0 if complete else 1


def _unique(rows: Sequence[Need]) -> list[RequiredModel]:
    seen: dict[tuple[str, str | None], RequiredModel] = {}
    for row in rows:
        key = (row.model.repo_id, row.model.revision)
        if key in seen:
            merged = tuple(dict.fromkeys([*seen[key].required, *row.model.required]))
            optional = tuple(dict.fromkeys([*seen[key].optional, *row.model.optional]))
            seen[key] = RequiredModel(key[0], merged, optional, key[1], seen[key].purpose, gated=row.model.gated)
        else:
            seen[key] = row.model
    return list(seen.values())


def _no_hub_line(models: Sequence[RequiredModel]) -> str | None:
    """Why nothing can be downloaded now (offline, or no hub), with what to download and where, or None."""
    from huggingface_hub import constants

    if hub_offline():
        why = "HF_HUB_OFFLINE=1"
    elif (problem := hub_unreachable()) is not None:
        why = f"the hub {constants.ENDPOINT} is unreachable ({problem})"
    else:
        return None
    repos = ", ".join(m.repo_id for m in models)
    return (
        f"cannot download {repos}: {why}; run `rewardflow models pull` where the hub is reachable and copy "
        f"the cache folder {hub_cache_dir()} here (or mount it, as compose and the chart do)"
    )


def plan(model: RequiredModel) -> tuple[list[str], list[tuple[str, int]]]:
    """(download patterns, [(file, bytes)]) from the hub's file list of the repository, with sizes."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = model_info(model.repo_id, revision=model.revision, files_metadata=True)
    except GatedRepoError:
        raise ModelsError(
            f"{model.repo_id} is gated: accept its license on https://huggingface.co/{model.repo_id} and log in "
            "(`hf auth login`, or HF_TOKEN)"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise ModelsError(f"{model.repo_id} ({model.setting}): not found on the hub ({type(exc).__name__})") from None
    from rewardflow_kit.hub import resolve_patterns

    files = {s.rfilename: int(s.size or 0) for s in info.siblings or []}
    patterns = resolve_patterns(model, list(files))
    chosen = [(f, size) for f, size in files.items() if any(fnmatch.fnmatch(f, p) for p in patterns)]
    return patterns, chosen


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def cmd_pull(services: Sequence[str], presets: Sequence[str], dry_run: bool) -> int:
    """Print each missing model's files and size, then download them with snapshot_download."""
    if not services and not presets:
        raise ModelsError(
            f"name services ({', '.join(service_names())}) and/or --trainer PRESET; `rewardflow models list` "
            "shows what each needs"
        )
    models = _unique(needs(services, presets))
    todo = [m for m in models if status(m) != "cached"]
    for model in models:
        if model not in todo:
            print(f"{model.repo_id}: already in the cache")
    if not todo:
        return 0
    if (line := _no_hub_line(todo)) is not None:
        raise ModelsError(line)
    plans = [(model, *plan(model)) for model in todo]
    for model, _, files in plans:
        print(f"{model.repo_id}: {len(files)} files, {_size(sum(s for _, s in files))} ({model.purpose})")
    print(f"total: {_size(sum(s for _, _, files in plans for _, s in files))} into {hub_cache_dir()}")
    if dry_run:
        return 0
    from huggingface_hub import snapshot_download

    for model, patterns, _ in plans:
        path = snapshot_download(model.repo_id, revision=model.revision, allow_patterns=patterns)
        print(f"{model.repo_id}: {path}")
    return 0


def main(argv: Sequence[str]) -> int:
    """`rewardflow models ...`; ModelsError is turned into one line and exit code 2 by the caller."""
    args = parser().parse_args(list(argv))
    if args.action == "list":
        if not args.services and not args.trainer:  # everything: every service and every preset
            return cmd_list(service_names(), _all_presets())
        return cmd_list(args.services, args.trainer)
    return cmd_pull(args.services, args.trainer, args.dry_run)


def _all_presets() -> list[str]:
    try:
        return list(_presets())
    except ModelsError:  # no trainer installed: the services alone
        return []
