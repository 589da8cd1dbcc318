"""Services are plug-ins: found through their `rewardflow.scorers` entry points, built from the one Dockerfile.

The rule (services/README.md): a reward service is a folder services/<name>/ whose pyproject.toml declares
the entry point <name>; its image is services/Dockerfile built with SERVICE=<name> (compose.yaml's build
entry). Folders without an entry point (the kit, vision) are libraries.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomllib
import yaml
from rewardflow_kit.registry import GROUP, discover, load_service, scorer_spec

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES_DIR = REPO_ROOT / "services"


def declared_entry_points() -> dict[str, dict[str, str]]:
    """Folder name -> its pyproject's `rewardflow.scorers` entry points, for every folder with a pyproject."""
    declared = {}
    for pyproject in sorted(SERVICES_DIR.glob("*/pyproject.toml")):
        project: dict[str, Any] = tomllib.loads(pyproject.read_text())["project"]
        declared[pyproject.parent.name] = project.get("entry-points", {}).get(GROUP, {})
    return declared


def compose_images() -> dict[str, dict[str, Any]]:
    """Compose service -> its build entry, for the services built from the shared services/Dockerfile."""
    services = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())["services"]
    return {
        name: s["build"]
        for name, s in services.items()
        if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == "services/Dockerfile"
    }


def test_discovered_services_are_the_folders_with_an_image() -> None:
    discovered = discover()
    with_image = {build["args"]["SERVICE"] for build in compose_images().values()}
    assert set(discovered) == with_image, "a service without an image, or an image of no installed service"
    assert set(compose_images()) == with_image, "compose service names differ from their SERVICE build args"
    for name in with_image:
        assert (SERVICES_DIR / name / "pyproject.toml").is_file(), f"SERVICE={name}: no services/{name}/"


def test_each_folder_declares_at_most_its_own_name_and_the_install_matches() -> None:
    declared = declared_entry_points()
    services = {folder: points for folder, points in declared.items() if points}
    assert {"kit", "vision"} <= set(declared) - set(services), "libraries must not declare a service"
    for folder, points in services.items():
        assert list(points) == [folder], f"services/{folder}/pyproject.toml declares {list(points)}"
    # What pip installed (editable) is what the pyprojects say: re-install after editing one.
    assert discover() == {folder: points[folder] for folder, points in services.items()}


@pytest.mark.parametrize("name", sorted(discover()))
def test_every_entry_point_loads_a_scorer_of_its_name(name: str) -> None:
    scorer = load_service(name)  # imports the class and checks the Scorer protocol
    assert scorer.name == name, f"{scorer_spec(name)}: name {scorer.name!r}, expected {name!r} (the folder)"


def test_no_service_package_has_a_main_or_a_scorer_spec() -> None:
    # `python -m rewardflow_kit NAME` serves every service; nothing reads a per-package spec.
    packages = [p for p in SERVICES_DIR.glob("*/rewardflow_*") if p.is_dir() and p.parent.name != "kit"]
    assert len(packages) >= len(discover())
    mains = [str(p.relative_to(REPO_ROOT)) for p in packages if (p / "__main__.py").exists()]
    assert mains == []
    specs = [str(f.relative_to(REPO_ROOT)) for p in packages for f in p.rglob("*.py") if "SCORER_SPEC" in f.read_text()]
    assert specs == []


def test_an_unknown_name_gets_the_known_ones_and_a_suggestion() -> None:
    with pytest.raises(ValueError, match=r"unknown service 'jpg'; did you mean 'jpeg'\? \(known services: .*\)"):
        scorer_spec("jpg")
    with pytest.raises(ValueError) as far_off:
        scorer_spec("zzzzzz")
    assert "did you mean" not in str(far_off.value) and ", ".join(sorted(discover())) in str(far_off.value)


def test_the_kit_refuses_an_unknown_name_in_one_line() -> None:
    # A deadline, not a measure: the answer comes after the kit's imports, minutes on a loaded 2-core machine.
    proc = subprocess.run(
        [sys.executable, "-m", "rewardflow_kit", "pickscor"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 2
    known = ", ".join(sorted(discover()))
    assert (
        proc.stderr.strip() == f"error: unknown service 'pickscor'; did you mean 'pickscore'? (known services: {known})"
    )
