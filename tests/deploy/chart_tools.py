"""The chart as the deploy tests see it: rendered by Helm's engine, objects by kind, and the validators."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from dockerfiles import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
from render_manifests import CHART, manifest_files, render

FULL_VALUES = yaml.safe_load((CHART / "ci" / "full-values.yaml").read_text())
SCHEMAS = REPO_ROOT / "k8s" / "schemas"
CRD_SCHEMAS = {
    "TrainJob": SCHEMAS / "trainjob-trainer.kubeflow.org-v1alpha1.json",
    "JobSet": SCHEMAS / "jobset-jobset.x-k8s.io-v1alpha2.json",
}
# The kinds that no bundled schema of kubernetes-validate covers (each is checked another way).
CUSTOM_KINDS = {"TrainJob", "JobSet", "ServiceMonitor"}
KUBERNETES_VERSION = "1.33"

__all__ = ["CHART", "FULL_VALUES", "manifest_files", "render"]


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """name -> object, for one kind."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def core_problems(objects: list[dict[str, Any]]) -> list[str]:
    """kubernetes-validate --strict on every object of a core kind; a core kind it has no schema for is a problem."""
    import kubernetes_validate

    problems = []
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{where}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            problems.append(f"{where}: no schema ({error.message})")
    return problems


def check_jsonschema(schema: Path, objects: dict[str, dict[str, Any]], folder: Path) -> dict[str, list[str]]:
    """One check-jsonschema command line over several objects (each written as JSON into `folder`): name -> errors.

    One process per schema, not per object: its start-up is most of its cost.
    """
    paths = {name: folder / f"{name}.json" for name in objects}
    for name, obj in objects.items():
        paths[name].write_text(json.dumps(obj))
    exe = Path(sys.executable).with_name("check-jsonschema")
    argv = [str(exe), "--output-format", "json", "--schemafile", str(schema), *map(str, paths.values())]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"check-jsonschema exited {done.returncode}: {done.stdout}{done.stderr}") from None
    assert report["parse_errors"] == [], report["parse_errors"]
    assert done.returncode == (1 if report["errors"] else 0), f"exit {done.returncode}: {done.stdout}{done.stderr}"
    names = {str(path): name for name, path in paths.items()}
    errors: dict[str, list[str]] = {name: [] for name in objects}
    for error in report["errors"]:
        errors[names[error["filename"]]].append(f"{error['path']}: {error['message']}")
    return errors
