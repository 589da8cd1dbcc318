"""The epoch loop, phase by phase as in Flow-GRPO's Algorithm 1 (docs/architecture.md, "One epoch"):

    for each epoch:
        rollout    = sample(...)            1. SDE rollouts with per-step log-probs; scoring overlaps
        advantages = advantages(...)        2. every rank's rewards -> per-prompt group normalization
        info       = update_policy(...)     3. clipped-ratio loss + KL, step by step, on shuffled minibatches
        metrics    = epoch_metrics(...)     4. rewards, losses, timings
        evaluate_and_save(...)              5. held-out eval, grids, checkpoint

Everything that a checkpoint holds is one `RunState`; the fixed parts of a run (model, sampler,
services, outputs) are one `Run`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from rewardflow_trainer import plots
from rewardflow_trainer.advantages import PerPromptStatTracker, per_reward_advantages
from rewardflow_trainer.agreement import scored_together
from rewardflow_trainer.algorithms import (
    Algorithm,
    Rollouts,
    RolloutSettings,
    UpdateContext,
    build_algorithm,
    loss_terms,
    needs_reference,
    rollout_settings,
)
from rewardflow_trainer.checkpoint import (
    TrainingState,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from rewardflow_trainer.config import Config, ConfigError
from rewardflow_trainer.ema import EMA
from rewardflow_trainer.evaluation import EvalResult, eval_metrics, evaluate, write_eval
from rewardflow_trainer.heartbeat import Heartbeat
from rewardflow_trainer.logging import RunLogger, read_metrics
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import Guidance, ModelFamily, load_family
from rewardflow_trainer.prompts import GroupedPromptSampler, Prompt, load_prompts
from rewardflow_trainer.rewards import RewardScorer, finite_advantages, screen_rewards
from rewardflow_trainer.run_outputs import RunResult, dump_advantages, finish
from rewardflow_trainer.sampling import Trajectory, group_latent_seeds, sample_trajectories

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
GRID_PROMPTS = 12
"""Prompts in the before/after grid (sample 0 of the first eval prompts)."""

__all__ = ["RunResult", "RunState", "make_accelerator", "train"]


def make_accelerator(config: Config) -> Accelerator:
    """The accelerator of a run: mixed precision from the config, on CUDA when there is one.

    Gradient accumulation is set by the loop (minibatches per optimizer step x trained steps).
    """
    return Accelerator(mixed_precision=config.model.mixed_precision, cpu=not torch.cuda.is_available())


@dataclass(frozen=True)
class EpochPlan:
    """How one epoch divides on this many ranks: sampling batches, training minibatches, trained steps."""

    batches_per_epoch: int
    num_minibatches: int
    accumulation: int
    num_trained_steps: int

    @classmethod
    def of(cls, config: Config, world_size: int) -> EpochPlan:
        """The plan, or ConfigError where the config cannot be trained as asked."""
        batches = config.sample.batches_per_epoch(world_size)
        local_samples = batches * config.sample.batch_size
        num_minibatches = max(1, local_samples // config.train.batch_size)
        accumulation = config.train.accumulation_steps(batches)
        if num_minibatches % accumulation:
            raise ConfigError(
                f"train.gradient_accumulation_steps = {accumulation} must divide the {num_minibatches} minibatches "
                f"per epoch (= {local_samples} samples per rank / train.batch_size {config.train.batch_size})"
            )
        if config.sample.noise_level <= 0 and config.train.algorithm == "grpo":
            raise ConfigError(
                f"sample.noise_level = {config.sample.noise_level}: training needs stochastic steps (e.g. 0.7); "
                "noise 0 is the deterministic ODE, used for evaluation only"
            )
        return cls(batches, num_minibatches, accumulation, loss_terms(config))


@dataclass
class RunState:
    """What a checkpoint holds, and a resume restores: weights, optimizer, EMA, RNGs, stat tracker, counters."""

    config: Config
    policy: Policy
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    generators: dict[str, Any]  # "sample" (SDE noise), "shuffle" (minibatch order), "mask" (padding draws)
    tracker: PerPromptStatTracker
    epoch: int = 0  # epochs completed
    global_step: int = 0  # optimizer steps taken


@dataclass
class Run:
    """The fixed parts of a run: accelerator, model, the algorithm, prompts, reward services and outputs."""

    config: Config
    acc: Accelerator
    plan: EpochPlan
    family: ModelFamily
    algorithm: Algorithm
    rollout: RolloutSettings  # how rollouts are sampled; its guidance also trains and evaluates
    sampler: GroupedPromptSampler
    eval_prompts: list[Prompt]
    scorer: RewardScorer
    logger: RunLogger
    out: Path
    heartbeat: Heartbeat = field(default_factory=lambda: Heartbeat(None))  # set by train()

    @property
    def guidance(self) -> Guidance:
        """The guidance of rollouts, training and evaluation (NFT: no CFG)."""
        return self.rollout.guidance


@dataclass
class Rollout:
    """One epoch's samples on this rank, their scores, and how long sampling and waiting for rewards took."""

    samples: Trajectory
    local_rewards: dict[str, np.ndarray]  # "reward" (the weighted sum) and each component
    sample_s: float
    reward_wait_s: float
    dropped: int = 0  # samples without a finite reward, left out of the advantages (reward.on_invalid_score)


@dataclass
class PolicyUpdate:
    """What one epoch's update did: per-step figures (policy_loss, ratio_mean, clipfrac, kl, ...) and its size."""

    figures: dict[str, list[float]]
    trained_samples: int


@dataclass
class Advantages:
    """Every rank's rewards gathered, the advantages of all of them, and this rank's slice."""

    gathered: dict[str, np.ndarray]
    all_prompts: list[str]
    all_advantages: np.ndarray
    local: np.ndarray
    all_scores: np.ndarray  # what ranks samples within a group: the weighted reward, or the per-reward sum


def train(
    config: Config,
    endpoints: dict[str, list[str]],
    accelerator: Accelerator | None = None,
    debug_dir: str | Path | None = None,
) -> RunResult:
    """Run `config.run.epochs` epochs of GRPO (resuming from `config.run.resume`); every rank calls it."""
    started = time.perf_counter()
    acc = accelerator or make_accelerator(config)
    run, state = setup(config, endpoints, acc, EpochPlan.of(config, acc.num_processes))
    run.heartbeat = beat = Heartbeat.of_run(run.out, acc.is_main_process)
    run.scorer.on_wait = lambda phase: beat.beat(phase, state.epoch)
    before_path, after = run.out / "eval_before.npz", None
    # Closed on errors too: the scorer's thread and connections, the metric files; the heartbeat says failed.
    with run.scorer, run.logger, beat.watch(lambda: state.epoch):
        if state.epoch == 0:
            save_before(run, state, before_path)
        for epoch in epoch_progress(run, state.epoch):
            epoch_start = time.perf_counter()
            beat.beat("sampling", epoch)
            rollout = sample_or_checkpoint(run, state, epoch)
            beat.beat("training", epoch)
            advantages = compute_advantages(run, state, rollout, epoch, debug_dir)
            update = update_policy(run, state, rollout, advantages)
            metrics = epoch_metrics(run, state, rollout, advantages, update, time.perf_counter() - epoch_start)
            state.epoch = epoch + 1
            after = evaluate_and_save(run, state, rollout, metrics) or after
    records = read_metrics(run.out) if acc.is_main_process else []
    result = finish(run.out, records, after, before_path, time.perf_counter() - started, acc.is_main_process)
    acc.wait_for_everyone()
    return result


# --- set-up ------------------------------------------------------------------------------------


def setup(config: Config, endpoints: dict[str, list[str]], acc: Accelerator, plan: EpochPlan) -> tuple[Run, RunState]:
    """Load the model, build policy, optimizer, EMA and algorithm, resume if asked, open prompts, services, logs."""
    acc.gradient_accumulation_steps = plan.accumulation * plan.num_trained_steps
    m, t, s, seed, rank = config.model, config.train, config.sample, config.run.seed, acc.process_index
    weight_dtype = DTYPES[m.mixed_precision] if t.lora is not None else torch.float32
    family = load_family(
        m.family, m.pretrained, dtype=weight_dtype, device=acc.device, seed=m.tiny_seed, resolution=m.resolution
    )
    policy = Policy(
        family.transformer,
        t.lora,
        keep_reference=needs_reference(config),
        seed=seed,
        export_lora=family.save_lora_weights,
    )
    for param in policy.parameters():  # trainable weights stay float32 under mixed precision
        param.data = param.data.float()
    if m.gradient_checkpointing:
        family.transformer.enable_gradient_checkpointing()
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=t.learning_rate, betas=t.adam_betas, weight_decay=t.weight_decay, eps=t.adam_eps
    )
    model, optimizer = acc.prepare(family.transformer, optimizer)
    state = RunState(
        config,
        policy,
        optimizer,
        EMA(policy.parameters(), t.ema.decay, t.ema.update_every) if t.ema.enabled else None,
        generators={
            "sample": torch.Generator(device=acc.device).manual_seed(seed * 1000 + 2 * rank + 1),
            "shuffle": torch.Generator().manual_seed(seed * 1000 + 2 * rank + 2),
            "mask": np.random.default_rng(seed * 1000 + rank),
        },
        tracker=PerPromptStatTracker(global_std=t.global_std, adv_clip_max=t.adv_clip_max),
    )
    if config.run.resume:
        saved = load_checkpoint(
            config.run.resume, policy, optimizer, state.ema, state.generators, state.tracker, rank=rank
        )
        state.epoch, state.global_step = saved.epoch, saved.global_step
    rollout = rollout_settings(config)
    context = UpdateContext(
        family, model, policy, optimizer, acc, state.ema, rollout.guidance, config,
        plan.num_minibatches, plan.accumulation, plan.num_trained_steps, state.global_step,
    )  # fmt: skip
    world, out = acc.num_processes, Path(config.run.out_dir)
    sampler = GroupedPromptSampler(
        load_prompts(config.prompts.train), s.num_groups, s.group_size, s.batch_size, world, rank, seed
    )
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")
    run = Run(
        config,
        acc,
        plan,
        family,
        build_algorithm(context),
        rollout,
        sampler,
        load_prompts(config.prompts.eval),
        open_scorer(config, endpoints),
        open_logger(config, acc, out, state.epoch),
        out,
    )
    return run, state


def open_scorer(config: Config, endpoints: dict[str, list[str]]) -> RewardScorer:
    """The reward client on its own thread, for the services at `endpoints`."""
    r = config.reward
    return RewardScorer(endpoints, r.weights, r.timeout_s, r.max_retries, r.api_key, r.outage_grace_s)


def open_logger(config: Config, acc: Accelerator, out: Path, resumed_epoch: int) -> RunLogger:
    """metrics.jsonl, tensorboard (and wandb); on resume, records of epochs after the checkpoint are dropped."""
    run = config.run
    start_epoch = resumed_epoch + 1 if run.resume else None
    return RunLogger(out, acc.is_main_process, run.wandb, run.wandb_project, config.to_dict(), start_epoch=start_epoch)


def epoch_progress(run: Run, start_epoch: int) -> tqdm:
    """The epochs still to run, with a progress bar on the main process."""
    show = run.config.run.progress and run.acc.is_main_process
    return tqdm(range(start_epoch, run.config.run.epochs), desc="epochs", disable=not show)


# --- 1. sample ---------------------------------------------------------------------------------


def sample(run: Run, state: RunState, epoch: int) -> Rollout:
    """Every sampling batch of the epoch; batch i is scored on the scorer's thread while batch i+1 samples."""
    start = time.perf_counter()
    run.scorer.pop_wait_s()
    s, seed, r = run.config.sample, run.config.run.seed, run.rollout
    parts: list[Trajectory] = []
    futures = []
    for batch in run.sampler.batches(epoch):
        seeds = group_latent_seeds(batch.prompts, epoch, seed) if s.same_latent else None
        with run.acc.autocast(), run.algorithm.sampling():  # the algorithm picks the weights that sample
            trajectory = sample_trajectories(
                run.family, batch.prompts, num_steps=s.num_steps, guidance=r.guidance, noise_level=r.noise_level,
                sde_type=r.sde_type, window=r.window, generator=state.generators["sample"], latent_seeds=seeds,
            )  # fmt: skip
        futures.append(run.scorer.submit(trajectory.images, batch.prompts, batch.metadata))
        parts.append(trajectory)
    results = [run.scorer.result(future) for future in futures]
    local, dropped = screen_rewards(results, run.config.reward.on_invalid_score, epoch)
    return Rollout(Trajectory.cat(parts), local, time.perf_counter() - start, run.scorer.pop_wait_s(), dropped)


def sample_or_checkpoint(run: Run, state: RunState, epoch: int) -> Rollout:
    """sample(), its failure decided by every rank together (agreement.py); when every replica of a reward stays
    down past reward.outage_grace_s (on any rank), every rank checkpoints the state this epoch started from (its RNG
    put back, so --resume repeats the epoch exactly), then the outage ends the run."""
    rng = capture_rng_state(state.generators)

    def checkpoint_epoch_start() -> None:
        restore_rng_state(rng, state.generators)
        checkpoint(run, state)

    return scored_together(run.acc, lambda: sample(run, state, epoch), checkpoint_epoch_start)


# --- 2. advantages -----------------------------------------------------------------------------


def compute_advantages(
    run: Run, state: RunState, rollout: Rollout, epoch: int, debug_dir: str | Path | None = None
) -> Advantages:
    """Rewards of every rank -> per-prompt advantages over the whole epoch (groups span ranks) -> this rank's."""
    acc, n = run.acc, len(rollout.samples)
    gathered = {
        k: acc.gather(torch.from_numpy(v).to(acc.device)).cpu().numpy() for k, v in rollout.local_rewards.items()
    }
    all_prompts = gather_object(list(rollout.samples.prompts))
    state.tracker.clear()
    all_advantages = scores = finite_advantages(state.tracker.update, all_prompts, gathered["reward"])
    t = run.config.train
    if t.advantages == "per_reward":  # GDPO-style; the tracker above still gives the group statistics
        scores = per_reward_advantages(all_prompts, gathered, run.config.reward.weights, t.global_std)
        all_advantages = np.nan_to_num(np.clip(scores, -t.adv_clip_max, t.adv_clip_max), nan=0.0)
    elif t.algorithm != "grpo":
        scores = gathered["reward"]
    # A dropped sample (no finite reward) has advantage 0 and score NaN: no DPO pair, SFT best or NFT term uses it.
    scores = np.where(np.isfinite(gathered["reward"]), scores, np.nan)
    local = all_advantages[acc.process_index * n : (acc.process_index + 1) * n]
    result = Advantages(gathered, all_prompts, all_advantages, local, scores)
    if debug_dir is not None:
        dump_advantages(Path(debug_dir), epoch, acc.process_index, rollout, result)
    return result


# --- 3. policy update --------------------------------------------------------------------------


def update_policy(run: Run, state: RunState, rollout: Rollout, advantages: Advantages) -> PolicyUpdate:
    """The algorithm's update on this epoch's rollouts (GRPO: zero-advantage samples dropped, step by step)."""
    rollouts = Rollouts(rollout.samples, advantages.local, advantages.all_prompts, advantages.all_scores)
    update = run.algorithm.update(rollouts, state.generators)
    state.global_step = run.algorithm.global_step
    return PolicyUpdate(update.figures, update.trained_samples)


# --- 4. metrics --------------------------------------------------------------------------------


def epoch_metrics(
    run: Run, state: RunState, rollout: Rollout, advantages: Advantages, update: PolicyUpdate, epoch_s: float
) -> dict[str, Any]:
    """Reward mean/std per reward, the update's figures averaged, the advantage statistics, timings."""
    metrics: dict[str, Any] = {}
    for name, values in advantages.gathered.items():
        metrics[f"{name}_mean"], metrics[f"{name}_std"] = float(np.nanmean(values)), float(np.nanstd(values))
    metrics.update({k: float(np.mean(v)) for k, v in update.figures.items()})
    if "ratio_dev_on_policy" in update.figures:  # the worst step, not the mean: it must be exactly 0
        metrics["ratio_dev_on_policy"] = float(np.max(update.figures["ratio_dev_on_policy"]))
    metrics.update(
        zero_std_ratio=state.tracker.stats().zero_std_ratio,
        trained_samples=update.trained_samples,
        dropped_samples=rollout.dropped,
        lr=float(state.optimizer.param_groups[0]["lr"]),
        reward_wait_share=rollout.reward_wait_s / epoch_s,
        global_step=state.global_step,
    )
    metrics.update({"time/epoch_s": epoch_s, "time/sample_s": rollout.sample_s})
    metrics["time/reward_wait_s"] = rollout.reward_wait_s
    return metrics


# --- 5. evaluate, log, save --------------------------------------------------------------------


def save_before(run: Run, state: RunState, path: Path) -> None:
    """Evaluate the untrained model: eval/start, the "before" of the before/after grid, logged at epoch 0."""
    run.heartbeat.beat("evaluating", state.epoch)
    before = evaluate(run, state)
    run.logger.log(0, eval_metrics(before))
    if run.acc.is_main_process:
        write_eval(run.out / "eval" / "start", before, "start (before training)")
        shown = before.first_samples(GRID_PROMPTS)
        np.savez(path, images=np.stack(shown.images), prompts=shown.prompts, rewards=shown.rewards)


def evaluate_and_save(run: Run, state: RunState, rollout: Rollout, metrics: dict[str, Any]) -> EvalResult | None:
    """Eval (the last one is the "after" of the grid), metrics, a sample grid and a checkpoint, when due."""
    r, done = run.config.run, state.epoch
    last = done == r.epochs
    after = None
    if (r.eval_every > 0 and done % r.eval_every == 0) or last:
        run.heartbeat.beat("evaluating", state.epoch)
        after = evaluate(run, state)
        metrics.update(eval_metrics(after))
        if last and run.acc.is_main_process:
            write_eval(run.out / "eval" / "end", after, f"end (after {done} epochs)")
    if done % r.log_every == 0 or last:
        run.logger.log(done, metrics)
    if run.acc.is_main_process and ((r.grid_every > 0 and done % r.grid_every == 0) or done in (1, r.epochs)):
        save_grid(run, rollout, done)
    if (r.save_every > 0 and done % r.save_every == 0) or last:
        checkpoint(run, state)
    return after


def save_grid(run: Run, rollout: Rollout, epoch: int) -> None:
    """Up to 16 of this epoch's samples, captioned with prompt and reward."""
    samples, shown = rollout.samples, min(len(rollout.samples), 16)
    rewards = rollout.local_rewards["reward"][:shown].tolist()
    grid = plots.image_grid(samples.images[:shown], samples.prompts[:shown], rewards, title=f"epoch {epoch}")
    plots.save_image(grid, run.out / "grids" / f"epoch-{epoch:06d}.png")
    run.logger.log_image(epoch, "samples", np.asarray(grid))


def checkpoint(run: Run, state: RunState) -> None:
    """Save the RunState after `state.epoch` epochs (main process; every rank's RNG state gathered)."""
    run.heartbeat.beat("checkpointing", state.epoch)
    rng_states = gather_object([capture_rng_state(state.generators)])  # one per rank, rank order
    if run.acc.is_main_process:
        save_checkpoint(
            run.out,
            TrainingState(state.epoch, state.global_step),
            state.policy,
            state.optimizer,
            state.ema,
            rng_states=rng_states,
            stat_tracker=state.tracker,
            config=state.config,
            keep=state.config.run.keep_checkpoints,
        )
    run.acc.wait_for_everyone()
