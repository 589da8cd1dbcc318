"""Every image is labelled and runs as non-root; the trainer image is a CUDA one that bakes no weights by default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dockerfiles import DOCKERFILES, REPO_ROOT, instructions

TRAINER_DOCKERFILE = REPO_ROOT / "trainer" / "Dockerfile"
OCI_LABELS = {"title", "description", "source", "version", "revision", "base.name"}


def by_kind(dockerfile: Path) -> dict[str, list[str]]:
    """Instruction -> the arguments of each of its occurrences, in file order."""
    found: dict[str, list[str]] = {}
    for kind, args in instructions(dockerfile):
        found.setdefault(kind, []).append(args)
    return found


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """The instructions of the last stage (the image that is shipped)."""
    steps = instructions(dockerfile)
    starts = [i for i, (kind, _) in enumerate(steps) if kind == "FROM"]
    return steps[starts[-1] :]


def labels(dockerfile: Path) -> set[str]:
    """The org.opencontainers.image.* label names set in the final stage."""
    text = " ".join(args for kind, args in final_stage(dockerfile) if kind == "LABEL")
    return {word.split("=")[0].removeprefix("org.opencontainers.image.") for word in text.split() if "=" in word}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_image_is_labelled_and_runs_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    assert OCI_LABELS <= labels(dockerfile), f"{dockerfile}: OCI labels missing: {OCI_LABELS - labels(dockerfile)}"
    users = [args for kind, args in final_stage(dockerfile) if kind == "USER"]
    assert users, f"{dockerfile}: no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{dockerfile}: USER {users[-1]!r}: expected a numeric non-root uid"
    assert [kind for kind, _ in final_stage(dockerfile)].count("HEALTHCHECK") == 1, "a HEALTHCHECK (or NONE, said why)"


def test_the_trainer_image_is_cuda_based_and_bakes_weights_only_when_asked() -> None:
    steps = by_kind(TRAINER_DOCKERFILE)
    base, *later = steps["FROM"]
    assert base.startswith("nvidia/cuda:") and base.endswith(" AS base") and "latest" not in base
    assert later == ["base AS build", "base"], "the build stage and the image both start from the CUDA base"
    args = dict(a.split("=", 1) if "=" in a else (a, None) for a in steps["ARG"])
    assert args["BAKE_PRESET"] == '""', "weights are baked only when a preset is named"
    assert args["TORCH_INDEX_URL"].endswith("/whl/cu128")
    bake = [a for a in steps["RUN"] if "BAKE_PRESET" in a]
    assert len(bake) == 1 and 'if [ -n "${BAKE_PRESET}" ]' in bake[0] and "models pull --trainer" in bake[0]
    assert "type=secret,id=hf_token" in bake[0], "a gated model's token comes from a build secret, not an ARG"
    env = " ".join(steps["ENV"]).split()
    assert {"HF_HOME=/models", "HF_HUB_OFFLINE=1"} <= set(env)
    assert steps["HEALTHCHECK"] == ["NONE"]  # a batch job: nothing to probe (the Dockerfile says why)
    assert json.loads(steps["CMD"][-1]) == ["rewardflow", "train"]
    installs = " ".join(a for a in steps["RUN"] if "pip install" in a)
    assert "/wheels/rewardflow_trainer-*.whl" in installs and '"${TORCH_INDEX_URL}"' in installs
    assert any("chown 10001:10001 /runs" in a for a in steps["RUN"]), "the run volume is writable by the user"
