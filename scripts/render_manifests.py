"""Render the Helm chart (k8s/chart) into the plain manifests under k8s/manifests/, for kubectl users.

    python scripts/render_manifests.py          # write them
    python scripts/render_manifests.py --check  # exit 1 when they differ from what the chart renders

The chart's default values, release name `rewardflow`, no namespace in the objects (kubectl's decides):
rewards.yaml holds the rewards, their Services, budgets, NetworkPolicy and claims; trainjob.yaml the trainer as
a Kubeflow TrainJob; jobset.yaml the same trainer as a JobSet (apply one of the two).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CHART = REPO_ROOT / "k8s" / "chart"
MANIFESTS = REPO_ROOT / "k8s" / "manifests"
RELEASE = "rewardflow"
HEADER = "# Rendered from k8s/chart by scripts/render_manifests.py ({what}); edit the chart, not this file.\n"


def render(values: dict[str, Any] | None = None, name: str = RELEASE, namespace: str = RELEASE) -> list[dict[str, Any]]:
    """The chart's objects for these values, in template order (helm-python-sdk: Helm's own engine)."""
    import helm_python

    rendered = helm_python.Chart.load(CHART).render(values or {}, name=name, namespace=namespace)
    texts = [text for path, text in sorted(rendered.items()) if path.endswith(".yaml")]
    return [doc for text in texts for doc in yaml.safe_load_all(text) if doc]


def manifest_files() -> dict[str, str]:
    """File name -> text of every plain manifest."""
    trainer_kinds = {"TrainJob", "JobSet"}
    files = {}
    for engine in ("trainjob", "jobset"):
        objects = render({"trainer": {"engine": engine}})
        jobs = [o for o in objects if o["kind"] in trainer_kinds]
        files[f"{engine}.yaml"] = HEADER.format(what=f"the trainer, trainer.engine={engine}") + dump(jobs)
    shared = [o for o in render() if o["kind"] not in trainer_kinds]
    files["rewards.yaml"] = HEADER.format(what="the rewards and the claims; default values") + dump(shared)
    return files


def dump(objects: list[dict[str, Any]]) -> str:
    """YAML documents, one per object, keys in their rendered order."""
    return "".join("---\n" + yaml.safe_dump(o, sort_keys=False, width=120) for o in objects)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args()
    stale = []
    for name, text in manifest_files().items():
        path = MANIFESTS / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(str(path.relative_to(REPO_ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        fix = "run python scripts/render_manifests.py"
        print(f"out of date with k8s/chart: {', '.join(stale)} ({fix})", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
