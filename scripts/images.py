"""Build and tag every image: each reward (services/Dockerfile, SERVICE=<name>) and the trainer, as compose.yaml
builds them (the CPU flavours) and as compose.gpu.yaml changes them (the CUDA flavours, tags without -cpu).

    python scripts/images.py                       # docker build each image
    python scripts/images.py --print               # only print the commands
    python scripts/images.py --registry registry.example.com/team/ --only pickscore --only trainer

The rewards are the compose services built from services/Dockerfile, which tests/services/test_registry.py keeps
equal to the installed `rewardflow.scorers` entry points; a new reward needs no change here.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def builds(root: Path = REPO_ROOT) -> list[tuple[str, dict[str, Any], str]]:
    """(compose service, build section, image tag) of every image, CPU flavours first; one entry per tag."""
    base = yaml.safe_load((root / "compose.yaml").read_text())["services"]
    overlay = yaml.safe_load((root / "compose.gpu.yaml").read_text())["services"]
    found: dict[str, tuple[str, dict[str, Any], str]] = {}
    for name, service in base.items():
        if "build" not in service:
            continue
        found.setdefault(service["image"], (name, service["build"], service["image"]))
        if name in overlay:
            gpu = overlay[name]
            args = {**service["build"].get("args", {}), **gpu.get("build", {}).get("args", {})}
            build = {**service["build"], "args": args}
            found.setdefault(gpu.get("image", service["image"]), (name, build, gpu.get("image", service["image"])))
    return list(found.values())


def revision(root: Path = REPO_ROOT) -> str:
    """The checkout's commit, for the OCI revision label ('unknown' outside git)."""
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def build_command(build: dict[str, Any], tag: str, registry: str, labels: dict[str, str]) -> list[str]:
    """The docker build command line of one image (build context and Dockerfile as compose.yaml gives them)."""
    command = ["docker", "build", "-f", build.get("dockerfile", "Dockerfile")]
    for key, value in {**build.get("args", {}), **labels}.items():
        command += ["--build-arg", f"{key}={value}"]
    return [*command, "-t", f"{registry}{tag}", build.get("context", ".")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--print", action="store_true", help="print the commands instead of running them")
    parser.add_argument("--registry", default="", help="prefix of every tag, e.g. registry.example.com/team/")
    parser.add_argument("--only", action="append", default=[], metavar="SERVICE", help="only this compose service")
    args = parser.parse_args(argv)
    selected = [b for b in builds() if not args.only or b[0] in args.only]
    unknown = set(args.only) - {name for name, _, _ in builds()}
    if unknown:
        print(f"--only {sorted(unknown)}: not an image compose.yaml builds", file=sys.stderr)
        return 2
    labels = {"REVISION": revision()}
    for _, build, tag in selected:
        version = tag.rsplit(":", 1)[1].removesuffix("-cpu")
        command = build_command(build, tag, args.registry, {**labels, "VERSION": version})
        print(shlex.join(command), flush=True)
        if not args.print:
            subprocess.run(command, cwd=REPO_ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
