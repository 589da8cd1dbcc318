"""The installed reward services: each package declares its scorer as an entry point in `rewardflow.scorers`.

A service's pyproject.toml says, e.g.

    [project.entry-points."rewardflow.scorers"]
    jpeg = "rewardflow_jpeg.scorer:JpegScorer"

and, once the package is installed, `python -m rewardflow_kit jpeg`, `rewardflow serve jpeg` and
`rewardflow stack up jpeg` find it by that name. Nothing here imports a scorer until one is loaded.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from rewardflow_proto.names import did_you_mean

if TYPE_CHECKING:
    from rewardflow_kit.hub import RequiredModel
    from rewardflow_kit.scorer import Scorer

GROUP = "rewardflow.scorers"


def discover() -> dict[str, str]:
    """Service name -> "module:Class" of its scorer, for every installed package that declares one."""
    return {ep.name: ep.value for ep in sorted(entry_points(group=GROUP), key=lambda ep: ep.name)}


def service_names() -> list[str]:
    """The installed services' names, sorted."""
    return list(discover())


def unknown_service_message(name: str, known: list[str]) -> str:
    """'unknown service ...; did you mean ...? (known services: ...)', from the one did-you-mean helper."""
    if not known:
        return f"unknown service {name!r} (none is installed: no package declares a {GROUP!r} entry point)"
    return did_you_mean(name, known, "service")


def scorer_spec(name: str) -> str:
    """The "module:Class" of a service's scorer; ValueError naming the known services for an unknown name."""
    services = discover()
    if name not in services:
        raise ValueError(unknown_service_message(name, list(services)))
    return services[name]


def load_service(name: str) -> Scorer:
    """Import, instantiate and check (the Scorer protocol) the scorer of the service called `name`."""
    from rewardflow_kit.server import load_scorer  # uvicorn and FastAPI load only when a scorer does

    return load_scorer(scorer_spec(name))


def service_models(name: str, env: Mapping[str, str] | None = None) -> list[RequiredModel]:
    """What the service `name` reads from the Hugging Face hub under the current REWARDFLOW_* settings (plus
    `env`, e.g. a run's reward.local_env): its scorer's `required_models()`, or nothing if it has none.

    Imports and instantiates the scorer (its settings are read then) but loads no model.
    """
    from rewardflow_kit.settings import ServiceSettings

    module_name, _, class_name = scorer_spec(name).partition(":")
    saved = {key: os.environ.get(key) for key in (env or {})}
    os.environ.update(env or {})
    try:
        scorer = getattr(importlib.import_module(module_name), class_name)()
        model = ServiceSettings().model
        if model:
            scorer.model_id = model  # as create_app does
        declared = getattr(scorer, "required_models", None)
        return list(declared()) if callable(declared) else []
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
