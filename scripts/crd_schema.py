"""Vendor a CustomResourceDefinition's openAPIV3Schema as a strict JSON schema for check-jsonschema.

    python scripts/crd_schema.py CRD.yaml VERSION OUT.json

The schema is the CRD's own, with three changes: descriptions are dropped (size), `apiVersion` and `kind` are
pinned to the CRD's group/version and kind, and every object that lists its properties and neither allows other
keys nor preserves unknown fields gets `additionalProperties: false` (the API server would silently prune an
unknown field there; kubernetes-validate --strict makes the same change for the core kinds).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

PRESERVE = "x-kubernetes-preserve-unknown-fields"


def strict(node: Any) -> Any:
    """The schema without descriptions, closed wherever the API server prunes unknown fields."""
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict(value) for key, value in node.items() if key != "description"}
    if "properties" in node and "additionalProperties" not in node and not node.get(PRESERVE):
        out["additionalProperties"] = False
    return out


def crd_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    """The strict JSON schema of one served version of a CRD."""
    served = {v["name"]: v for v in crd["spec"]["versions"]}
    if version not in served:
        raise SystemExit(f"version {version!r}: the CRD serves {sorted(served)}")
    schema = strict(served[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["apiVersion"] = {"type": "string", "enum": [f"{crd['spec']['group']}/{version}"]}
    schema["properties"]["kind"] = {"type": "string", "enum": [crd["spec"]["names"]["kind"]]}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return {"$schema": "http://json-schema.org/draft-07/schema#", "title": crd["metadata"]["name"], **schema}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crd", type=Path, help="the CRD's YAML (one document)")
    parser.add_argument("version", help="the served version, e.g. v1alpha1")
    parser.add_argument("out", type=Path, help="where to write the JSON schema")
    args = parser.parse_args()
    crd = yaml.safe_load(args.crd.read_text())
    args.out.write_text(json.dumps(crd_schema(crd, args.version), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
