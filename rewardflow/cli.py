"""`rewardflow`: serve a reward service, score image files, run the local stack, train.

User errors (a service down, an unknown reward, a missing file) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rewardflow_kit import stack
from rewardflow_kit.registry import service_names
from rewardflow_proto.client_policy import reward_service_suggestions
from rewardflow_proto.names import did_you_mean

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A mistake or a condition the user fixes (bad argument, service down); printed as one line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rewardflow", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run one reward service in the foreground")
    serve.add_argument("name", help=f"service name ({', '.join(service_names())})")
    serve.add_argument("--port", type=int, default=None, help="TCP port (default: $REWARDFLOW_PORT or 8000)")
    serve.add_argument("--host", default=None, help="address to listen on (default: $REWARDFLOW_HOST or 127.0.0.1)")

    score = sub.add_parser("score", help="score image files with running reward services")
    score.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files (any format Pillow reads)")
    score.add_argument("--prompt", action="append", required=True, help="one prompt for all images, or one per image")
    score.add_argument(
        "--reward",
        action="append",
        required=True,
        metavar="NAME[=URL]",
        help="reward name (jpeg, jpeg_size_kb, ...); URL(s), comma-separated, default to the local stack's",
    )
    score.add_argument("--weight", action="append", default=[], metavar="NAME=W", help="weight of a reward (default 1)")
    score.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    score.add_argument("--api-key", default=None, help="bearer token for services that require one")
    score.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")

    stk = sub.add_parser("stack", help="run reward services as local processes on 127.0.0.1")
    stk_sub = stk.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = stk_sub.add_parser("up", help="start services (default: all known), wait until ready")
    up.add_argument("names", nargs="*", metavar="NAME", help=f"services (default: {', '.join(service_names())})")
    up.add_argument("--port-base", type=int, default=8100, help="first port to try (default 8100)")
    up.add_argument("--replicas", type=int, default=1, help="processes per service (default 1)")
    up.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness (default 120)")
    down = stk_sub.add_parser("down", help="stop services (default: all) and forget them")
    down.add_argument("names", nargs="*", metavar="NAME")
    stk_sub.add_parser(
        "status", help="each replica: URL, pid, readiness, in-flight requests, error count and answers by status"
    )

    sub.add_parser("train", help="train a model with rewards (see `rewardflow train --help`)", add_help=False)
    sub.add_parser("eval", help="benchmark reports: `rewardflow eval geneval --help`", add_help=False)
    sub.add_parser("models", help="list and pull the Hugging Face models services and presets need", add_help=False)
    sub.add_parser("data", help="list, generate and fetch the prompt sets the presets read", add_help=False)
    sub.add_parser("pretrain", help="pretrain the demo's shapes model: `rewardflow pretrain --help`", add_help=False)
    return parser


# ---------------------------------------------------------------- score


def parse_rewards(
    specs: Sequence[str], weight_specs: Sequence[str], known: dict[str, list[str]]
) -> tuple[dict[str, list[str]], dict[str, float]]:
    """`NAME[=URL[,URL]]` and `NAME=W` options → (service -> URLs, reward name -> weight)."""
    endpoints: dict[str, list[str]] = {}
    weights: dict[str, float] = {}
    installed = service_names()
    services = sorted(set(installed) | set(known))
    for spec in specs:
        name, _, urls = spec.partition("=")
        if not name:
            raise UserError(f"--reward {spec!r}: expected NAME or NAME=URL")
        try:
            service = _service_of(name, services)
        except ValueError:
            service = name  # a service we do not ship; its URL must be given
        if urls:
            endpoints[service] = [u.strip() for u in urls.split(",") if u.strip()]
        elif service not in endpoints:
            if service not in known:
                raise UserError(_no_endpoint_message(name, service, installed))
            endpoints[service] = known[service]
        weights[name] = 1.0
    for spec in weight_specs:
        name, _, value = spec.partition("=")
        if name not in weights:
            raise UserError(f"--weight {spec!r}: {name!r} is not one of the --reward names ({', '.join(weights)})")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UserError(f"--weight {spec!r}: expected NAME=NUMBER, got weight {value!r}") from None
    return endpoints, weights


def _no_endpoint_message(reward: str, service: str, installed: list[str]) -> str:
    """Why a reward has no URL, and how to get one: a URL, or `stack up` for an installed service; a name that
    no installed service matches gets the did-you-mean of every unknown name instead."""
    if service not in installed:
        suggestions = reward_service_suggestions(reward, installed)
        return f"--reward {reward}: {did_you_mean(reward, installed, 'reward service', suggestions)}"
    return (
        f"reward {reward}: no URL given and no local stack serves {service!r}; pass --reward {reward}=http://HOST:PORT"
        f" or run `rewardflow stack up {service}`"
    )


def _service_of(name: str, services: Sequence[str]) -> str:
    from rewardflow_proto.client import service_of

    return service_of(name, services)


def read_images(paths: Sequence[Path]) -> np.ndarray | list[np.ndarray]:
    """Image files → RGB uint8: one (N, H, W, 3) array when all sizes match (one raw batch), else a list."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        except (OSError, UnidentifiedImageError) as exc:
            raise UserError(f"image {path}: cannot read it ({exc})") from None
    if len({a.shape for a in arrays}) == 1:
        return np.stack(arrays)
    return arrays


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def _rows(paths: Sequence[Path], prompts: list[str], result: Any) -> list[dict[str, Any]]:
    rows = []
    for i, path in enumerate(paths):
        errors = result.errors[i] or {}
        rows.append(
            {
                "image": str(path),
                "prompt": prompts[i],
                "total": _number(result.total[i]),
                "rewards": {name: _number(v[i]) for name, v in result.components.items()},
                "scores": {s: {k: _number(v[i]) for k, v in keys.items()} for s, keys in result.scores.items()},
                "errors": {s: {"code": e.code, "message": e.message} for s, e in errors.items()},
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows → a plain-text table with a column per reward and the weighted total."""
    names = list(rows[0]["rewards"]) if rows else []
    header = ["image", *names, "total"]
    lines = [header]
    for row in rows:
        cells = [row["image"], *(_cell(row["rewards"][n]) for n in names), _cell(row["total"])]
        lines.append(cells)
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    out = [
        "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(line, widths, strict=True)))
        for line in lines
    ]
    for row in rows:
        for service, err in row["errors"].items():
            out.append(f"{row['image']}: {service} failed: {err['code']}: {err['message']}")
    return "\n".join(out)


def _cell(value: float | None) -> str:
    return "error" if value is None else f"{value:.4f}"


def cmd_score(args: argparse.Namespace) -> int:
    from rewardflow_proto.client import RewardClient, RewardServiceError

    endpoints, weights = parse_rewards(args.reward, args.weight, stack.read_stack_file())
    n = len(args.images)
    if len(args.prompt) not in (1, n):
        raise UserError(f"--prompt given {len(args.prompt)} times for {n} images; give it once or once per image")
    prompts = args.prompt * n if len(args.prompt) == 1 else list(args.prompt)
    images = read_images(args.images)

    async def run() -> Any:
        async with RewardClient(endpoints, weights, timeout_s=args.timeout, api_key=args.api_key) as client:
            return await client.score(images, prompts)

    try:
        result = asyncio.run(run())
    except RewardServiceError as exc:
        raise UserError(str(exc)) from None
    except ValueError as exc:  # an unknown reward name, checked against the services' score keys
        raise UserError(str(exc)) from None
    rows = _rows(args.images, prompts, result)
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(format_table(rows))
    return 1 if any(row["errors"] for row in rows) else 0


# ---------------------------------------------------------------- stack, serve, train


def cmd_stack(args: argparse.Namespace) -> int:
    if args.action == "up":
        names = args.names or service_names()
        try:
            started = stack.stack_up(names, args.port_base, args.replicas)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        for name in names:
            note = "started" if name in started else "already up"
            print(f"{name}: {', '.join(stack.read_stack_file()[name])} ({note})")
        print(f"stack file: {stack.stack_file_path()}")
        return 0
    if args.action == "down":
        stopped = stack.stack_down(args.names)
        print(f"stopped: {', '.join(stopped)}" if stopped else "no stack is running")
        return 0
    services = stack.load_stack_file()
    if not services:
        print(f"no stack is running (no {stack.stack_file_path()})")
        return 1
    replicas = stack.stack_status()
    for replica in replicas:
        print(replica.line())
    return 0 if all(r.state == "ready" for r in replicas) else 1


def cmd_train(argv: list[str]) -> int:
    try:
        from rewardflow_trainer.cli import main as train_main
    except ImportError as exc:
        raise UserError(f"the trainer is not available ({exc}); install it with `pip install -e trainer`") from None
    return int(train_main(argv) or 0)


# Benchmark reports: name -> the trainer module whose `main(argv)` writes the report.
EVALS: dict[str, str] = {"geneval": "rewardflow_trainer.eval_geneval"}


def cmd_eval(argv: list[str]) -> int:
    name = argv[0] if argv else ""
    if not name or name.startswith("-"):
        raise UserError(f"usage: rewardflow eval {{{','.join(EVALS)}}} [options]; got {name or 'nothing'!r}")
    if name not in EVALS:
        raise UserError(f"rewardflow eval: {did_you_mean(name, EVALS, 'benchmark')}")
    try:
        module = importlib.import_module(EVALS[name])
    except ImportError as exc:
        raise UserError(f"the trainer is not available ({exc}); install it with `pip install -e trainer`") from None
    return int(module.main(argv[1:]) or 0)


def cmd_pretrain(argv: list[str]) -> int:
    try:
        from rewardflow_trainer.pretrain import main as pretrain_main
    except ImportError as exc:
        raise UserError(f"the trainer is not available ({exc}); install it with `pip install -e trainer`") from None
    return int(pretrain_main(argv, prog="rewardflow pretrain") or 0)


def cmd_tool(name: str, argv: list[str]) -> int:
    """`rewardflow models ...` and `rewardflow data ...`: their modules' main(); their errors are one line."""
    module = importlib.import_module(f"rewardflow.{name}_cli")
    try:
        return int(module.main(argv) or 0)
    except module.ToolError as exc:
        raise UserError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `rewardflow` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["train"]:
            return cmd_train(argv[1:])  # the trainer parses its own options, --help included
        if argv[:1] == ["eval"]:
            return cmd_eval(argv[1:])
        if argv[:1] in (["models"], ["data"]):
            return cmd_tool(argv[0], argv[1:])  # each parses its own options
        if argv[:1] == ["pretrain"]:
            return cmd_pretrain(argv[1:])  # `shapes` and `evaluate`, parsed by the trainer
        args = _parser().parse_args(argv)
        if args.command == "serve":
            try:
                return stack.serve(args.name, args.host, args.port)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        if args.command == "score":
            return cmd_score(args)
        return cmd_stack(args)
    except (UserError, stack.StackError) as exc:
        print(f"rewardflow: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
