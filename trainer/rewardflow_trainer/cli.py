"""`rewardflow train`: build the config, find (or start) the reward services, run the loop, print the summary.

With no arguments it is the embedded default (preset tiny_jpeg): a tiny random SD3 learns JPEG
compressibility on the CPU in a few minutes, against a jpeg service started as a local process.
Multi-process: `accelerate launch --num_processes 2 --cpu -m rewardflow_trainer.cli [options]`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list
from rewardflow_kit.stack import StackError
from rewardflow_proto.client import RewardServiceError

from rewardflow_trainer.config import Config, ConfigError
from rewardflow_trainer.hub_models import check_pretrained
from rewardflow_trainer.launch_env import complete_process_env, reward_overrides
from rewardflow_trainer.loop import make_accelerator, train
from rewardflow_trainer.presets import DEFAULT_PRESET, PRESETS, build_config, describe
from rewardflow_trainer.rewards import InvalidScores


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rewardflow train",
        description="Flow-GRPO fine-tuning against reward services. No arguments: the embedded tiny_jpeg demo.",
        epilog="Overrides are dotted config keys, e.g. train.learning_rate=1e-3 reward.weights.pickscore=1.0",
    )
    parser.add_argument("--preset", default=DEFAULT_PRESET, help=f"one of {', '.join(PRESETS)} (default %(default)s)")
    parser.add_argument("--epochs", type=int, help="training epochs (run.epochs)")
    parser.add_argument("--out", help="run directory (run.out_dir)")
    parser.add_argument("--model", help="HF id or local path of the model (model.pretrained); default: the preset's")
    parser.add_argument(
        "--algorithm", choices=("grpo", "dpo", "sft", "nft"), help="training algorithm (train.algorithm); default grpo"
    )
    parser.add_argument("--resume", help="checkpoint dir or run dir to resume from (run.resume)")
    parser.add_argument("--debug-dump", help="write each rank's prompts, rewards and advantages per epoch here")
    parser.add_argument(
        "--show-config", action="store_true", help="print every config key with its value and help, then exit"
    )
    parser.add_argument(
        "--debug", action="store_true", help="on a configuration or reward-service error, raise it with its traceback"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, applied after the preset")
    return parser


def build_run_config(args: argparse.Namespace) -> Config:
    """Preset + reward URLs and API key from the environment + overrides + the shortcut options, validated."""
    shortcuts = {"run.epochs": args.epochs, "run.out_dir": args.out, "model.pretrained": args.model}
    shortcuts["run.resume"] = args.resume
    shortcuts["train.algorithm"] = args.algorithm
    given = {key: value for key, value in shortcuts.items() if value is not None}
    overrides = [*reward_overrides(os.environ), *args.overrides]  # the command line wins over the environment
    return build_config(args.preset, overrides, given).validate(check_paths=not args.show_config)


@contextmanager
def reward_endpoints(config: Config, accelerator: Accelerator) -> Iterator[dict[str, list[str]]]:
    """The services' URLs: from the config, else the running local stack, else (rank 0) a stack started here.

    Only the main process starts services; the others receive the URLs after a barrier (a broadcast).
    Services started here are stopped on exit.
    """
    if config.reward.endpoints:  # the config checked that they cover every reward
        needed = config.reward.services(list(config.reward.endpoints))
        yield {s: list(config.reward.endpoints[s]) for s in needed}
        return
    from rewardflow_kit.registry import service_names

    try:
        needed = config.reward.services(service_names())
    except ValueError as error:
        raise ConfigError(f"{error}; installed services are found through their package entry points") from None
    stack, payload, failure = None, {}, None
    if accelerator.is_main_process:
        try:
            stack, payload["endpoints"] = _local_services(config, needed)
        except Exception as error:  # the other ranks must hear about it, not wait forever
            failure = error
            payload["error"] = str(error) if isinstance(error, USER_ERRORS) else f"{type(error).__name__}: {error}"
            payload["config"] = isinstance(error, ConfigError)
    payload = broadcast_object_list([payload])[0]
    if failure is not None:
        raise failure  # rank 0 raises what happened (its traceback with --debug)
    if "error" in payload:
        raise (ConfigError if payload["config"] else ServiceError)(payload["error"])
    try:
        yield payload["endpoints"]
    finally:
        accelerator.wait_for_everyone()
        if stack is not None:
            stack.stop()


@contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (a `kill`, a pod's shutdown) unwinds like an exit, so the services this run started are stopped."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class ServiceError(RuntimeError):
    """A reward service the run needs did not come up, on another rank than the one that started it."""


USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, ServiceError, StackError, RewardServiceError, InvalidScores)
"""Errors the user fixes (a setting, a service, a missing model or file): one line without --debug."""


def error_line(error: Exception, config: Config | None = None) -> str:
    """What to print for a user error: the cause and what to do about it."""
    if isinstance(error, RewardServiceError):
        resume = f"; once it is back, continue with --resume {config.run.out_dir}" if config is not None else ""
        return f"reward service failed: {error} (check the service, e.g. `rewardflow stack status`){resume}"
    if isinstance(error, (StackError, ServiceError)):
        return f"a reward service did not start: {error}"
    return str(error)


def _local_services(config: Config, needed: list[str]) -> tuple[object | None, dict[str, list[str]]]:
    from rewardflow_kit.stack import read_stack_file, ready_state, start_stack

    running = {s: urls for s, urls in read_stack_file().items() if all(ready_state(u) == "ready" for u in urls)}
    missing = [s for s in needed if s not in running]
    stack = None
    if missing:
        if not config.reward.start_local_stack:
            raise ConfigError(
                f"no running service for {missing}: run `rewardflow stack up {' '.join(missing)}`, set "
                "reward.endpoints, or set reward.start_local_stack=true"
            )
        stack = start_stack(missing, log_dir=Path(config.run.out_dir) / "logs", env=config.reward.local_env)
        running.update(stack.endpoints)
    return stack, {s: running[s] for s in needed}


def _single_process_cpu_launch(accelerator: Accelerator) -> bool:
    # accelerate's simple launcher sets MASTER_PORT only when more than one process was asked for.
    asked = os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_PORT" in os.environ
    return asked and accelerator.num_processes == 1 and "WORLD_SIZE" not in os.environ


def cpu_threads(config: Config, num_processes: int) -> int:
    """Intra-op threads per process on a CPU: the cores shared out, and 1 for the tiny model.

    The tiny model's matrices (<= 64 wide) gain nothing from threads, and OpenMP threads that spin
    while the cores are shared (with the jpeg service, or with other jobs) slowed a 16-image rollout
    from 1.3 s to 15-22 s on the 2-core machine under load.
    """
    if config.model.pretrained is None:
        return 1
    return max(1, (os.cpu_count() or 1) // num_processes)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rewardflow train` and `python -m rewardflow_trainer.cli`; returns the exit code (2: a
    configuration or reward-service error, printed as the cause and the fix; --debug raises it instead)."""
    args = _parser().parse_intermixed_args(list(sys.argv[1:] if argv is None else argv))
    config: Config | None = None
    try:
        config = build_run_config(args)
        if args.show_config:
            print(describe(config))
            return 0
        check_model(config)
        return run(config, args)
    except USER_ERRORS as error:
        if args.debug:
            raise
        print(f"rewardflow train: {error_line(error, config)}", file=sys.stderr)
        return 2


def check_model(config: Config) -> None:
    """ConfigError before anything loads when model.pretrained is a hub id that is neither cached nor downloadable."""
    repo = config.model.pretrained
    as_preset = bool(config.preset) and PRESETS[config.preset]().model.pretrained == repo
    fix = f"run `rewardflow models pull --trainer {config.preset}`" if as_preset else f"run `hf download {repo}`"
    check_pretrained(config.model.family, repo, config.model.revision, fix, "model.pretrained")


def run(config: Config, args: argparse.Namespace) -> int:
    """Train with a validated config: accelerator, threads, the reward services, the loop, the summary."""
    complete_process_env()  # rank and local rank from a one-process-per-node launcher's variables
    accelerator = make_accelerator(config)
    if _single_process_cpu_launch(accelerator):
        print(
            "rewardflow train: `accelerate launch --cpu --num_processes N` started ONE process (accelerate starts "
            "several CPU processes only through MPI); on a machine without CUDA use `accelerate launch --multi_gpu "
            "--num_processes N -m rewardflow_trainer.cli ...` (torchrun + gloo) or `torchrun --nproc_per_node N`",
            file=sys.stderr,
        )
    if accelerator.device.type == "cpu":
        torch.set_num_threads(cpu_threads(config, accelerator.num_processes))
    with terminate_as_exit(), reward_endpoints(config, accelerator) as endpoints:
        result = train(config, endpoints, accelerator, debug_dir=args.debug_dump)
    if accelerator.is_main_process:
        out = result.out_dir
        print(f"wrote {out / 'metrics.jsonl'}, {out / 'reward_curve.png'}, {out / 'before_after.png'}, {out / 'grids'}")
        print(f"{result.summary} in {result.wall_s:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
