"""The installed reward services: each package declares its scorer as an entry point in `rewardflow.scorers`.

A service's pyproject.toml says, e.g.

    [project.entry-points."rewardflow.scorers"]
    jpeg = "rewardflow_jpeg.scorer:JpegScorer"

and, once the package is installed, `python -m rewardflow_kit jpeg`, `rewardflow serve jpeg` and
`rewardflow stack up jpeg` find it by that name. Nothing here imports a scorer until one is loaded.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from rewardflow_proto.names import did_you_mean

if TYPE_CHECKING:
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
