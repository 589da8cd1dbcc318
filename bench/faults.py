"""Fault injection into a real training run: faults cost time, never correctness (issue 17).

    .venv/bin/python bench/faults.py [--scenario NAME ...] [--epochs 3] [--out DIR]

Starts jpeg replicas as local processes (each with its own REWARDFLOW_FAULT_FILE, see
rewardflow_kit.faults), trains `rewardflow train --preset tiny_jpeg` shortened against them, and while
it runs injects one scenario's faults. Each scenario is compared with a clean run of the same config:

- the run ends with exit 0 and every epoch logged;
- the images the services scored (rewardflow_images_scored_total, summed over replicas, plus the
  images answered `non_finite` on purpose) equal the clean run's: each image scored exactly once;
- the final trainable weights equal the clean run's bit for bit (a dropped, defaulted or doubled
  score would change the gradient), except under `nonfinite`, where samples are dropped on purpose.

Scenarios: slow, status_429, status_503, malformed, nonfinite, pause (SIGSTOP: the client's timeout
fails over, then the replica is killed and restarted), kill_restart (SIGKILL a replica mid-run, start
it again on its port), outage (every replica killed: the run waits reward.outage_grace_s, checkpoints
and exits non-zero; the replicas come back and --resume continues) and trainer_kill (SIGKILL the
trainer at a random point, then --resume).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rewardflow_kit.stack import serve_command, start_stack, stop_pids

EPOCHS = 3
SERVICE = "jpeg"


@dataclass
class Replica:
    """One jpeg process with its own fault file."""

    url: str
    port: int
    pid: int
    faults: Path
    log: Path
    banked: int = 0  # images scored by earlier processes on this port (scraped before they were stopped)


@dataclass
class FaultStack:
    """jpeg replicas whose faults, lives and counters a scenario controls."""

    workdir: Path
    replicas: list[Replica] = field(default_factory=list)

    @classmethod
    def start(cls, workdir: Path, count: int = 2) -> FaultStack:
        stack = cls(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            faults = workdir / f"faults-{i}.json"
            faults.write_text("{}")
            env = {"REWARDFLOW_FAULT_FILE": str(faults)}
            started = start_stack([SERVICE], log_dir=workdir / f"replica-{i}", env=env, ready_timeout_s=600)
            entry = started.services[SERVICE]
            url, pid, log = entry["urls"][0], entry["pids"][0], Path(entry["logs"][0])
            stack.replicas.append(Replica(url, int(url.rsplit(":", 1)[1]), pid, faults, log))
        return stack

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def set_faults(self, i: int, **plan: object) -> None:
        """Write replica i's fault plan (rewardflow_kit.faults); {} clears it. Replaced atomically."""
        tmp = self.replicas[i].faults.with_suffix(".tmp")
        tmp.write_text(json.dumps(plan))
        tmp.replace(self.replicas[i].faults)

    def set_all_faults(self, **plan: object) -> None:
        for i in range(len(self.replicas)):
            self.set_faults(i, **plan)

    def signal(self, i: int, sig: signal.Signals) -> None:
        os.kill(self.replicas[i].pid, sig)

    def restart(self, i: int) -> None:
        """Start replica i again on its port (after a kill) and wait until it is ready."""
        replica = self.replicas[i]
        env = {**os.environ, "REWARDFLOW_FAULT_FILE": str(replica.faults)}
        with open(replica.log, "ab") as out:
            proc = subprocess.Popen(
                serve_command(SERVICE, replica.port), stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )  # fmt: skip
        replica.pid = proc.pid
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{replica.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"replica {i} at {replica.url} did not come back (log: {replica.log})")

    def kill(self, i: int) -> None:
        """SIGKILL replica i, after banking what it scored (a stopped one does not answer: banked before)."""
        self.replicas[i].banked += counter(self.replicas[i].url, "rewardflow_images_scored_total", timeout_s=1.0)
        self.signal(i, signal.SIGKILL)
        _reap(self.replicas[i].pid)

    def scored(self) -> int:
        """Images scored plus images answered non_finite on purpose, over every replica, banked ones included."""
        total = 0
        for r in self.replicas:
            total += r.banked + counter(r.url, "rewardflow_images_scored_total")
        return total

    def injected(self) -> dict[str, int]:
        """Injected faults by kind, over the live replicas."""
        kinds: dict[str, int] = {}
        for r in self.replicas:
            text = _metrics(r.url)
            for kind, value in re.findall(r'rewardflow_faults_injected_total\{[^}]*kind="(\w+)"[^}]*\} (\S+)', text):
                kinds[kind] = kinds.get(kind, 0) + int(float(value))
        return kinds

    def stop(self) -> None:
        stop_pids([r.pid for r in self.replicas], grace_s=2.0)


def _metrics(url: str, timeout_s: float = 5.0) -> str:
    try:
        return httpx.get(f"{url}/metrics", timeout=timeout_s).text
    except httpx.HTTPError:
        return ""


def counter(url: str, name: str, timeout_s: float = 5.0) -> int:
    """A counter of one replica's /metrics (0 when absent or the replica does not answer)."""
    found = re.search(rf"^{name}\{{[^}}]*\}} (\S+)$", _metrics(url, timeout_s), re.MULTILINE)
    return int(float(found.group(1))) if found else 0


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass  # not our child (started by start_stack's Popen in this process: it is)


def train_command(out: Path, urls: list[str], epochs: int, *overrides: str) -> list[str]:
    """`rewardflow train --preset tiny_jpeg` shortened, against `urls`, a checkpoint every epoch."""
    return [
        sys.executable, "-m", "rewardflow_trainer.cli", "--preset", "tiny_jpeg", "--epochs", str(epochs),
        "--out", str(out), f"reward.endpoints.jpeg={json.dumps(urls)}", "run.progress=false", "run.eval_every=0",
        "run.grid_every=0", "run.save_every=1", "sample.num_steps=4", "sample.eval_num_steps=2",
        "reward.timeout_s=5", "reward.max_retries=6", "reward.outage_grace_s=60", *overrides,
    ]  # fmt: skip


@dataclass
class Outcome:
    """What one run did: exit code, epochs logged, images scored service-side, faults injected, its out dir."""

    name: str
    code: int
    epochs: int
    scored: int
    injected: dict[str, int]
    out: Path
    seconds: float
    stderr: str = ""


def run_training(
    name: str, workdir: Path, epochs: int, inject: Callable[[FaultStack, subprocess.Popen, Path], None] | None = None
) -> Outcome:
    """A fresh stack, one training run, `inject(stack, trainer, out)` while it runs (in this thread), the counts."""
    stack = FaultStack.start(workdir / name / "stack")
    out = workdir / name / "run"
    started = time.monotonic()
    try:
        overrides = OVERRIDES.get(name, ())
        command = train_command(out, stack.urls, epochs, *overrides)
        log = workdir / name / "trainer.log"
        with open(log, "w") as sink:  # a file, not a pipe: nobody reads a pipe while faults are injected
            trainer = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, text=True)
            if inject is not None:
                inject(stack, trainer, out)
            code = trainer.wait(timeout=1800)
            if code != 0 and name in RESUMED:  # stopped on purpose: continue from its last checkpoint
                resume = ("--resume", str(out)) if list((out / "checkpoints").glob("epoch-*")) else ()
                command = train_command(out, stack.urls, epochs, *resume)
                code = subprocess.run(command, stdout=sink, stderr=subprocess.STDOUT, timeout=1800).returncode
        stderr = log.read_text(errors="replace")[-4000:]
        logged = {r["epoch"] for r in _metric_records(out) if "reward_mean" in r}
        seconds = time.monotonic() - started
        return Outcome(name, code, len(logged), stack.scored(), stack.injected(), out, seconds, stderr)
    finally:
        stack.stop()


def _metric_records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_for_epoch(out: Path, epoch: int, trainer: subprocess.Popen, timeout_s: float = 900) -> None:
    """Until the run has logged `epoch` (its first record with a reward), or the trainer exited."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and trainer.poll() is None:
        if any(r.get("epoch") == epoch and "reward_mean" in r for r in _metric_records(out)):
            return
        time.sleep(0.05)


def wait_for_phase(out: Path, phase: str, trainer: subprocess.Popen, timeout_s: float = 900) -> None:
    """Until the run's heartbeat says `phase` (or the trainer exited)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and trainer.poll() is None:
        try:
            if json.loads((out / "heartbeat.json").read_text())["phase"] == phase:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)


def _during_sampling(act: Callable[[FaultStack], None]) -> Callable[[FaultStack, subprocess.Popen, Path], None]:
    """Apply `act` once the first epoch is logged and the next one is sampling, then clear every fault."""

    def inject(stack: FaultStack, trainer: subprocess.Popen, out: Path) -> None:
        wait_for_epoch(out, 1, trainer)
        wait_for_phase(out, "sampling", trainer)
        act(stack)

    return inject


def _pause(stack: FaultStack) -> None:
    stack.replicas[0].banked += counter(stack.replicas[0].url, "rewardflow_images_scored_total")
    stack.signal(0, signal.SIGSTOP)  # accepts connections, never answers: the client's timeout trips
    time.sleep(8)
    stack.kill(0)  # killed while stopped: what it held is never answered (nor counted twice)
    stack.restart(0)


def _kill_restart(stack: FaultStack) -> None:
    stack.kill(0)
    time.sleep(1)
    stack.restart(0)


def _outage(stack: FaultStack, trainer: subprocess.Popen, out: Path) -> None:
    """Every replica gone during sampling: the run waits reward.outage_grace_s, checkpoints and exits non-zero;
    then the replicas come back (the harness resumes the run)."""
    wait_for_epoch(out, 1, trainer)
    wait_for_phase(out, "sampling", trainer)
    for i in range(len(stack.replicas)):
        stack.kill(i)
    trainer.wait(timeout=900)
    for i in range(len(stack.replicas)):
        stack.restart(i)


def _trainer_kill(stack: FaultStack, trainer: subprocess.Popen, out: Path) -> None:
    wait_for_epoch(out, 1, trainer)
    time.sleep(random.uniform(0.0, 3.0))
    trainer.send_signal(signal.SIGKILL)


UNCOUNTED = ("pause", "kill_restart", "trainer_kill", "outage")
"""Scenarios whose service-side counts cannot be exact: a killed replica's last counts die with it, and a resumed
trainer samples its interrupted epoch again. Their bitwise-equal final weights show that no score was lost,
defaulted or doubled."""

SCENARIOS: dict[str, Callable[[FaultStack, subprocess.Popen, Path], None] | None] = {
    "clean": None,
    "slow": _during_sampling(lambda s: s.set_faults(0, sleep_s=1.0)),
    # On every replica, two hits each: the next batch fails 4 times in a row, then is served (max_retries 6).
    "status_429": _during_sampling(lambda s: s.set_all_faults(status=429, count=2)),
    "status_503": _during_sampling(lambda s: s.set_all_faults(status=503, count=2)),
    "malformed": _during_sampling(lambda s: s.set_all_faults(malformed=True, count=2)),
    "nonfinite": _during_sampling(lambda s: s.set_faults(0, nonfinite=True, count=1)),
    "pause": _during_sampling(_pause),
    "kill_restart": _during_sampling(_kill_restart),
    "trainer_kill": _trainer_kill,
    "outage": _outage,
}
RESUMED = ("trainer_kill", "outage")
OVERRIDES = {"nonfinite": ("reward.on_invalid_score=drop",), "outage": ("reward.outage_grace_s=5",)}


def final_weights_equal(a: Path, b: Path, epochs: int) -> bool:
    """Whether two runs' last checkpoints hold bit-identical trainable weights."""
    from safetensors.torch import load_file

    name = f"checkpoints/epoch-{epochs:06d}/trainable.safetensors"
    wa, wb = load_file(a / name), load_file(b / name)
    return wa.keys() == wb.keys() and all(bool((wa[k] == wb[k]).all()) for k in wa)


def check(outcome: Outcome, clean: Outcome, epochs: int) -> list[str]:
    """What a scenario got wrong against the clean run ([] when nothing)."""
    problems = []
    if outcome.code != 0:
        problems.append(f"exit code {outcome.code}: {outcome.stderr.strip().splitlines()[-1:]}")
    if outcome.epochs != epochs:
        problems.append(f"{outcome.epochs} epochs logged, expected {epochs}")
    # Images answered non_finite on purpose are not scored; the trainer dropped exactly those samples.
    expected = clean.scored - dropped_samples(outcome.out)
    if outcome.name not in UNCOUNTED and outcome.scored != expected:
        problems.append(f"services scored {outcome.scored} images, expected {expected} (clean run: {clean.scored})")
    if outcome.name != "nonfinite" and outcome.code == 0 and not final_weights_equal(outcome.out, clean.out, epochs):
        problems.append("final weights differ from the clean run's")
    return problems


def dropped_samples(out: Path) -> int:
    """Samples the run left out of the advantages (reward.on_invalid_score=drop), over its epochs."""
    return sum(int(r.get("dropped_samples", 0)) for r in _metric_records(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=[s for s in SCENARIOS if s != "clean"])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out", type=Path, default=Path("/tmp/rewardflow-faults"))
    args = parser.parse_args(argv)
    clean = run_training("clean", args.out, args.epochs)
    print(f"{'scenario':14} {'exit':>4} {'epochs':>6} {'scored':>6} {'s':>6}  injected / problems")
    failed = 0
    for name in ["clean", *(args.scenario or [s for s in SCENARIOS if s != "clean"])]:
        outcome = clean if name == "clean" else run_training(name, args.out, args.epochs, SCENARIOS[name])
        problems = check(outcome, clean, args.epochs)
        failed += bool(problems)
        print(
            f"{name:14} {outcome.code:>4} {outcome.epochs:>6} {outcome.scored:>6} {outcome.seconds:>6.0f}  "
            f"{outcome.injected or ''} {'; '.join(problems) or 'ok'}"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
