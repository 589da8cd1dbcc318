"""The trainer's heartbeat: `<run dir>/heartbeat.json` says which phase the run is in and since when.

Written atomically (a temporary file renamed over the old one, so a reader never sees half a file) by
the main process at every phase change: starting, sampling, scoring (the loop waits for rewards),
training, evaluating, checkpointing, waiting_for_services (every replica of a reward is down), then
done or failed. {"phase", "epoch", "time" (Unix seconds), "pid", "since_start_s"}.

Kubernetes liveness: an exec probe of the trainer's container runs

    python -m rewardflow_trainer.heartbeat /runs/x/heartbeat.json --max-age 900

which exits 0 while the file is younger than --max-age seconds and the phase is not `failed`, else 1
with one line saying why. Choose --max-age above the longest phase (an eval or a checkpoint of a big
model); a phase that lasts longer than that is what the probe is for: a hung run is restarted and
continues with --resume.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HEARTBEAT_FILE = "heartbeat.json"
PHASES = (
    "starting",
    "sampling",
    "scoring",
    "training",
    "evaluating",
    "checkpointing",
    "waiting_for_services",
    "done",
    "failed",
)


class Heartbeat:
    """Writes the heartbeat file of one run (or nothing, on other ranks than the main one)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.started = time.time()
        self.phase = ""

    @classmethod
    def of_run(cls, out_dir: Path, main_process: bool) -> Heartbeat:
        """The heartbeat of a run writing to `out_dir` (only the main process writes it)."""
        return cls(Path(out_dir) / HEARTBEAT_FILE if main_process else None)

    @contextmanager
    def watch(self, epoch_of: Callable[[], int]) -> Iterator[None]:
        """Around a run: `done` when the block ends, `failed` with the error when it raises."""
        try:
            yield
        except BaseException as exc:
            self.beat("failed", epoch_of(), error=f"{type(exc).__name__}: {exc}"[:1000])
            raise
        self.beat("done", epoch_of())

    def beat(self, phase: str, epoch: int, **extra: Any) -> None:
        """Record that the run is now in `phase` of `epoch` (ValueError for an unknown phase)."""
        if phase not in PHASES:
            raise ValueError(f"heartbeat phase {phase!r}: expected one of {', '.join(PHASES)}")
        self.phase = phase
        if self.path is None:
            return
        now = time.time()
        record = {"phase": phase, "epoch": epoch, "time": now, "pid": os.getpid(), "since_start_s": now - self.started}
        write_atomically(self.path, json.dumps({**record, **extra}) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_heartbeat(path: Path) -> dict[str, Any]:
    """The last heartbeat written to `path` (FileNotFoundError when there is none)."""
    return json.loads(Path(path).read_text())


def check(path: Path, max_age_s: float, now: float | None = None) -> str | None:
    """Why the run at `path` is not alive (no file, unreadable, older than max_age_s, failed), or None."""
    try:
        beat = read_heartbeat(path)
    except FileNotFoundError:
        return f"{path}: no heartbeat yet"
    except (OSError, ValueError) as exc:
        return f"{path}: unreadable heartbeat ({exc})"
    age = (time.time() if now is None else now) - float(beat.get("time", 0))
    if beat.get("phase") == "failed":
        return f"{path}: the run failed in epoch {beat.get('epoch')} ({beat.get('error', 'no detail')})"
    if age > max_age_s:
        return f"{path}: phase {beat.get('phase')!r} of epoch {beat.get('epoch')} for {age:.0f} s > {max_age_s:.0f} s"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m rewardflow_trainer.heartbeat FILE --max-age S`: exit 0 if alive, else 1 with the reason."""
    parser = argparse.ArgumentParser(prog="python -m rewardflow_trainer.heartbeat", description=main.__doc__)
    parser.add_argument("file", type=Path, help="the run's heartbeat.json")
    parser.add_argument("--max-age", type=float, default=900.0, help="seconds without a beat that mean dead")
    args = parser.parse_args(argv)
    reason = check(args.file, args.max_age)
    if reason is not None:
        print(reason, file=sys.stderr)
        return 1
    print(json.dumps(read_heartbeat(args.file)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
