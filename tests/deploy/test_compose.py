"""compose.yaml is a valid Compose file (the spec's JSON schema) and follows the rules the schema cannot state."""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.resources
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

# Services that are not rewards (they have no folder under services/): the trainer and the VLM judges' server.
NOT_REWARDS = {"trainer", "sglang"}
CONTAINER_PORT = "8000"
MODEL_CACHE_VOLUME = "model-cache"
# Every reward image is built from this file (build context: the repository root).
SERVICE_DOCKERFILE = "services/Dockerfile"


def compose_schema() -> dict[str, Any]:
    """The Compose Specification JSON schema vendored by check-jsonschema (no download at test time)."""
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Every schema violation as 'path: message'."""
    validator = jsonschema.Draft202012Validator(compose_schema())
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(document)]


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping, whichever of the two Compose forms it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {item.split("=", 1)[0]: item.split("=", 1)[1] if "=" in item else None for item in env}
    return {key: None if value is None else str(value) for key, value in env.items()}


def host_ports(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host port, container port) pairs of a service's short-form `ports` entries."""
    pairs = []
    for entry in service.get("ports", []):
        match = re.fullmatch(r"(?:[\d.]+:)?(\d+):(\d+)(?:/tcp)?", str(entry))
        assert match, f"port {entry!r}: expected 'HOST:CONTAINER' with literal numbers"
        pairs.append((match.group(1), match.group(2)))
    return pairs


def package_version(repo_root: Path, name: str) -> str:
    """Version of services/<name>/ from its pyproject.toml."""
    text = (repo_root / "services" / name / "pyproject.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    assert match, f"services/{name}/pyproject.toml: no version line"
    return match.group(1)


def build_problems(where: str, name: str, build: Any) -> list[str]:
    """A reward's image comes from the shared services/Dockerfile, with SERVICE naming the service."""
    if not isinstance(build, dict) or build.get("context", ".") != "." or build.get("dockerfile") != SERVICE_DOCKERFILE:
        return [f"{where}.build: expected context '.' and dockerfile {SERVICE_DOCKERFILE}"]
    service = (build.get("args") or {}).get("SERVICE")
    if service != name:
        return [f"{where}.build.args.SERVICE: {service!r}: expected {name!r} (the service's folder and entry point)"]
    return []


def rule_violations(document: dict[str, Any], repo_root: Path, require_files: bool = True) -> list[str]:
    """What `docker compose config` would accept but this project forbids, one line per problem."""
    problems: list[str] = []
    services: dict[str, dict[str, Any]] = document.get("services", {})
    seen_ports: dict[str, str] = {}
    for name, service in services.items():
        where = f"services.{name}"
        build = service.get("build")
        if isinstance(build, dict) and require_files:
            dockerfile = repo_root / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{where}.build.dockerfile: {dockerfile} does not exist")

        image = service.get("image", "")
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        if not image or tag in ("", "latest"):
            problems.append(f"{where}.image: {image!r}: expected an explicit tag other than 'latest'")

        for dependency, condition in (service.get("depends_on") or {}).items():
            if dependency not in services:
                problems.append(f"{where}.depends_on: {dependency!r} is not a service")
            elif condition.get("condition") != "service_healthy":
                problems.append(f"{where}.depends_on.{dependency}: expected condition service_healthy")

        env = environment(service)
        for volume in service.get("volumes", []):
            if isinstance(volume, dict) and volume.get("source") == MODEL_CACHE_VOLUME:
                if not volume.get("read_only"):
                    problems.append(f"{where}.volumes: the model cache must be mounted read_only")
                if env.get("HF_HUB_OFFLINE") != "1":
                    problems.append(f"{where}.environment.HF_HUB_OFFLINE: expected '1' with the model cache")

        for host, _ in host_ports(service):
            if host in seen_ports:
                problems.append(f"{where}.ports: host port {host} is also used by {seen_ports[host]}")
            seen_ports[host] = name

        if name in NOT_REWARDS:
            continue
        folder = repo_root / "services" / name
        if "restart" not in service:
            problems.append(f"{where}.restart: missing; expected a restart policy")
        if service.get("profiles") and name not in service["profiles"]:
            problems.append(f"{where}.profiles: {service['profiles']}: expected none (the default stack) or {name!r}")
        if require_files and not (folder / "pyproject.toml").is_file():
            problems.append(f"{where}: services/{name}/pyproject.toml does not exist")
        problems += build_problems(where, name, build)
        if require_files and (folder / "pyproject.toml").is_file():
            expected = f"rewardflow-{name}:{package_version(repo_root, name)}"
            if image not in (expected, f"{expected}-cpu"):
                problems.append(
                    f"{where}.image: {image!r}: expected {expected!r} (the package's version; -cpu: CPU torch)"
                )
        check = (service.get("healthcheck") or {}).get("test")
        if not check or service["healthcheck"].get("disable") or "/readyz" not in " ".join(check):
            problems.append(f"{where}.healthcheck: expected a test that calls /readyz")
        if [container for _, container in host_ports(service)] != [CONTAINER_PORT]:
            problems.append(f"{where}.ports: expected one mapping to container port {CONTAINER_PORT}")
        if env.get("REWARDFLOW_PORT") != CONTAINER_PORT or env.get("REWARDFLOW_HOST") != "0.0.0.0":
            problems.append(f"{where}.environment: expected REWARDFLOW_HOST=0.0.0.0 and REWARDFLOW_PORT=8000")
    return problems


def test_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []
    assert "jpeg" in compose["services"]


def test_schema_check_rejects_a_misspelt_field(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["jpeg"]["helthcheck"] = broken["services"]["jpeg"].pop("healthcheck")
    broken["services"]["jpeg"]["ports"] = 8101
    errors = schema_errors(broken)
    assert any("helthcheck" in e for e in errors), errors
    assert any(e.startswith("services/jpeg/ports") for e in errors), errors


def test_compose_file_follows_the_project_rules(compose: dict[str, Any], repo_root: Path) -> None:
    assert rule_violations(compose, repo_root) == []


def test_compose_builds_exactly_the_discovered_services(compose: dict[str, Any]) -> None:
    from rewardflow_kit.registry import discover  # the installed services, by their entry points

    rewards = set(compose["services"]) - NOT_REWARDS
    builds = [s["build"] for s in compose["services"].values() if "build" in s]
    shared = [build for build in builds if build.get("dockerfile") == SERVICE_DOCKERFILE]
    built = {(build.get("args") or {}).get("SERVICE") for build in shared}
    assert set(discover()) == rewards == built


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda s: s["jpeg"].update(image="rewardflow-jpeg:latest"), "services.jpeg.image"),
        (lambda s: s["jpeg"].update(image="rewardflow-jpeg"), "services.jpeg.image"),
        (lambda s: s["jpeg"].pop("healthcheck"), "services.jpeg.healthcheck"),
        (lambda s: s["jpeg"].pop("restart"), "services.jpeg.restart"),
        (lambda s: s["jpeg"]["build"].update(dockerfile="services/Dockerfile.missing"), "does not exist"),
        (lambda s: s["jpeg"]["build"].update(dockerfile="services/jpeg/Dockerfile"), "services.jpeg.build"),
        (lambda s: s["jpeg"]["build"]["args"].update(SERVICE="ocr"), "services.jpeg.build.args.SERVICE: 'ocr'"),
        (lambda s: s.update(other=copy.deepcopy(s["jpeg"])), "services/other/pyproject.toml does not exist"),
        (lambda s: s.update(jpeg2=copy.deepcopy(s["jpeg"])), "host port 8101 is also used by jpeg"),
        (lambda s: s["jpeg"].update(depends_on={"nope": {"condition": "service_started"}}), "is not a service"),
        (
            lambda s: s["jpeg"].update(volumes=[{"type": "volume", "source": MODEL_CACHE_VOLUME, "target": "/m"}]),
            "read_only",
        ),
    ],
)
def test_rule_check_catches(compose: dict[str, Any], repo_root: Path, change: Any, expected: str) -> None:
    broken = copy.deepcopy(compose)
    change(broken["services"])
    assert any(expected in problem for problem in rule_violations(broken, repo_root))


def test_schema_comes_from_the_installed_check_jsonschema() -> None:
    version = importlib.metadata.version("check-jsonschema")
    assert compose_schema()["title"] == "Compose Specification", f"check-jsonschema {version}"
