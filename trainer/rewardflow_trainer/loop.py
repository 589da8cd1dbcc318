"""The epoch loop: sample (scoring overlaps) → gather rewards → advantages → GRPO update → eval → checkpoint."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from rewardflow_trainer import plots
from rewardflow_trainer.advantages import PerPromptStatTracker, training_mask
from rewardflow_trainer.checkpoint import TrainingState, capture_rng_state, load_checkpoint, save_checkpoint
from rewardflow_trainer.config import Config, ConfigError
from rewardflow_trainer.ema import EMA
from rewardflow_trainer.grpo import GRPOUpdater, UpdateSettings, trained_step_count
from rewardflow_trainer.logging import RunLogger, read_metrics
from rewardflow_trainer.lora import Policy
from rewardflow_trainer.models import Guidance, load_family
from rewardflow_trainer.prompts import GroupedPromptSampler, eval_batches, load_prompts
from rewardflow_trainer.rewards import RewardScorer
from rewardflow_trainer.sampling import SdeWindow, Trajectory, group_latent_seeds, sample_eval, sample_trajectories

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class RunResult:
    """What a finished run reports: the training reward at its start and end, and where things are."""

    out_dir: Path
    reward_start: float
    reward_end: float
    wall_s: float

    @property
    def summary(self) -> str:
        change = 100.0 * (self.reward_end - self.reward_start) / max(abs(self.reward_start), 1e-12)
        return f"reward start {self.reward_start:.4g} → end {self.reward_end:.4g} ({change:+.1f}%)"


def make_accelerator(config: Config) -> Accelerator:
    """The accelerator of a run: mixed precision from the config, accumulation over minibatches × steps."""
    return Accelerator(mixed_precision=config.model.mixed_precision, cpu=not torch.cuda.is_available())


def train(
    config: Config,
    endpoints: dict[str, list[str]],
    accelerator: Accelerator | None = None,
    debug_dir: str | Path | None = None,
) -> RunResult:
    """Run `config.run.epochs` epochs of GRPO (resuming from `config.run.resume`); every rank calls it."""
    started = time.perf_counter()
    acc = accelerator or make_accelerator(config)
    run, rank, world = config.run, acc.process_index, acc.num_processes
    out = Path(run.out_dir)
    batches_per_epoch = config.sample.batches_per_epoch(world)
    local_samples = batches_per_epoch * config.sample.batch_size
    num_minibatches = max(1, local_samples // config.train.batch_size)
    accumulation = config.train.accumulation_steps(batches_per_epoch)
    if num_minibatches % accumulation:
        raise ConfigError(
            f"train.gradient_accumulation_steps = {accumulation} must divide the {num_minibatches} minibatches per "
            f"epoch (= {local_samples} samples per rank / train.batch_size {config.train.batch_size})"
        )
    if config.sample.noise_level <= 0:
        raise ConfigError(
            f"sample.noise_level = {config.sample.noise_level}: training needs stochastic steps (e.g. 0.7); "
            "noise 0 is the deterministic ODE, used for evaluation only"
        )
    windowed = config.sample.sde_window is not None
    num_trained = trained_step_count(config.sample.num_train_timesteps(), config.train.timestep_fraction, windowed)
    acc.gradient_accumulation_steps = accumulation * num_trained

    lora = config.train.lora
    weight_dtype = DTYPES[config.model.mixed_precision] if lora is not None else torch.float32
    m = config.model
    family = load_family(
        m.family, m.pretrained, dtype=weight_dtype, device=acc.device, seed=m.tiny_seed, resolution=m.resolution
    )
    policy = Policy(family.transformer, lora, keep_reference=config.train.beta > 0, seed=run.seed)
    for param in policy.parameters():  # trainable weights stay float32 under mixed precision
        param.data = param.data.float()
    if config.model.gradient_checkpointing:
        family.transformer.enable_gradient_checkpointing()
    t = config.train
    optimizer = torch.optim.AdamW(
        policy.parameters(), lr=t.learning_rate, betas=t.adam_betas, weight_decay=t.weight_decay, eps=t.adam_eps
    )
    model, optimizer = acc.prepare(family.transformer, optimizer)
    ema = EMA(policy.parameters(), t.ema.decay, t.ema.update_every) if t.ema.enabled else None
    guidance = Guidance(config.sample.guidance_scale, config.sample.cfg, config.sample.detach_uncond)
    settings = UpdateSettings(t.clip_range, t.beta, t.max_grad_norm, num_trained)
    updater = GRPOUpdater(family, model, policy, optimizer, acc, settings, guidance, ema)
    tracker = PerPromptStatTracker(global_std=t.global_std, adv_clip_max=t.adv_clip_max)
    generators: dict[str, Any] = {
        "sample": torch.Generator(device=acc.device).manual_seed(run.seed * 1000 + 2 * rank + 1),
        "shuffle": torch.Generator().manual_seed(run.seed * 1000 + 2 * rank + 2),
        "mask": np.random.default_rng(run.seed * 1000 + rank),
    }
    start_epoch = 0
    if run.resume:
        state = load_checkpoint(run.resume, policy, optimizer, ema, generators, tracker, rank=rank)
        start_epoch, updater.global_step = state.epoch, state.global_step
    sc = config.sample
    prompts = load_prompts(config.prompts.train)
    sampler = GroupedPromptSampler(prompts, sc.num_groups, sc.group_size, sc.batch_size, world, rank, run.seed)
    eval_prompts = load_prompts(config.prompts.eval)
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        config.save(out / "config.json")
    window = SdeWindow(*config.sample.sde_window) if windowed else None
    resumed_at = start_epoch + 1 if run.resume else None  # records of epochs after the checkpoint go
    logger = RunLogger(out, acc.is_main_process, run.wandb, run.wandb_project, config.to_dict(), start_epoch=resumed_at)
    scorer = RewardScorer(
        endpoints, config.reward.weights, config.reward.timeout_s, config.reward.max_retries, config.reward.api_key
    )

    saved = (policy, optimizer, ema, generators, tracker, config)  # what a checkpoint holds
    with scorer, logger:  # closed on errors too: the scorer's thread and connections, the metric files

        def evaluate() -> dict[str, Any]:
            """Noise-0 ODE with more steps, EMA weights, held-out prompts; images gathered to every rank."""
            mine = eval_batches(eval_prompts, config.sample.eval_batch_size, world, rank, config.prompts.eval_limit)
            rows: list[tuple[int, str, np.ndarray, float]] = []
            with torch.no_grad(), acc.autocast(), ema.swapped_in() if ema is not None else nullcontext():
                for batch in mine:
                    seeds = group_latent_seeds(batch.prompts, 0, run.seed)  # the same noise at every eval
                    steps = sc.eval_num_steps
                    traj = sample_eval(family, batch.prompts, num_steps=steps, guidance=guidance, latent_seeds=seeds)
                    scores = scorer.score(traj.images, batch.prompts, batch.metadata).total
                    rows += list(zip(batch.prompt_ids, batch.prompts, traj.images, scores.tolist(), strict=True))
            rows = sorted(gather_object(rows), key=lambda r: r[0])
            return {"prompts": [r[1] for r in rows], "images": [r[2] for r in rows], "rewards": [r[3] for r in rows]}

        before_path = out / "eval_before.npz"
        if start_epoch == 0:  # the "before" of the before/after grid
            before = evaluate()
            logger.log(0, {"eval/reward_mean": float(np.mean(before["rewards"]))})
            if acc.is_main_process:
                np.savez(
                    before_path, images=np.stack(before["images"]), prompts=before["prompts"], rewards=before["rewards"]
                )

        after: dict[str, Any] | None = None
        epochs = tqdm(range(start_epoch, run.epochs), desc="epochs", disable=not (run.progress and acc.is_main_process))
        for epoch in epochs:
            epoch_start = time.perf_counter()
            scorer.pop_wait_s()
            # 1. Sample every batch; batch i is scored on the scorer's thread while batch i+1 samples.
            parts: list[Trajectory] = []
            futures, prompt_batches = [], sampler.batches(epoch)
            for batch in prompt_batches:
                seeds = group_latent_seeds(batch.prompts, epoch, run.seed) if config.sample.same_latent else None
                with acc.autocast():
                    traj = sample_trajectories(
                        family, batch.prompts, num_steps=sc.num_steps, guidance=guidance, noise_level=sc.noise_level,
                        sde_type=sc.sde_type, window=window, generator=generators["sample"], latent_seeds=seeds,
                    )  # fmt: skip
                futures.append(scorer.submit(traj.images, batch.prompts, batch.metadata))
                parts.append(traj)
            results = [scorer.result(f) for f in futures]
            samples = Trajectory.cat(parts)
            sample_s = time.perf_counter() - epoch_start
            wait_s = scorer.pop_wait_s()

            # 2. Rewards of every rank → per-prompt advantages over the whole epoch → this rank's slice.
            local = {"reward": np.concatenate([r.total for r in results])}
            for name in results[0].components:
                local[name] = np.concatenate([r.components[name] for r in results])
            gathered = {k: acc.gather(torch.from_numpy(v).to(acc.device)).cpu().numpy() for k, v in local.items()}
            all_prompts = gather_object(list(samples.prompts))
            tracker.clear()
            all_advantages = tracker.update(all_prompts, gathered["reward"])
            advantages = all_advantages[rank * len(samples) : (rank + 1) * len(samples)]
            if debug_dir is not None:
                _dump(
                    Path(debug_dir),
                    epoch,
                    rank,
                    samples.prompts,
                    local["reward"],
                    advantages,
                    all_prompts,
                    gathered["reward"],
                    all_advantages,
                )

            # 3. Drop zero-advantage samples, then inner epochs over shuffled minibatches, step by step.
            keep = np.flatnonzero(training_mask(advantages, num_minibatches, generators["mask"]))
            kept, kept_adv = samples.select(keep.tolist()), torch.tensor(advantages[keep], dtype=torch.float32)
            kept_adv = kept_adv.to(acc.device)
            info: dict[str, list[float]] = {}
            updater.begin_epoch()
            for _inner in range(t.num_inner_epochs):
                order = torch.randperm(len(kept), generator=generators["shuffle"])
                for chunk in torch.tensor_split(order, num_minibatches):
                    for key, values in updater.minibatch(kept.select(chunk), kept_adv[chunk.to(acc.device)]).items():
                        info.setdefault(key, []).extend(values)
            epoch_s = time.perf_counter() - epoch_start

            metrics: dict[str, Any] = {}
            for name, values in gathered.items():
                metrics[f"{name}_mean"], metrics[f"{name}_std"] = float(values.mean()), float(values.std())
            metrics.update({k: float(np.mean(v)) for k, v in info.items()})
            if "ratio_dev_on_policy" in info:
                metrics["ratio_dev_on_policy"] = float(np.max(info["ratio_dev_on_policy"]))
            metrics.update(
                zero_std_ratio=float(np.mean(all_advantages == 0)),
                trained_samples=len(keep),
                lr=float(optimizer.param_groups[0]["lr"]),
                reward_wait_share=wait_s / epoch_s,
                global_step=updater.global_step,
            )
            metrics.update({"time/epoch_s": epoch_s, "time/sample_s": sample_s, "time/reward_wait_s": wait_s})
            done = epoch + 1
            if (run.eval_every > 0 and done % run.eval_every == 0) or done == run.epochs:
                after = evaluate()  # the last one is the "after" of the before/after grid
                metrics["eval/reward_mean"] = float(np.mean(after["rewards"]))
            if done % run.log_every == 0 or done == run.epochs:
                logger.log(done, metrics)
            epochs.set_postfix(reward=f"{metrics['reward_mean']:.4g}", wait=f"{metrics['reward_wait_share']:.0%}")
            if acc.is_main_process and ((run.grid_every > 0 and done % run.grid_every == 0) or done in (1, run.epochs)):
                shown = min(len(samples), 16)
                grid = plots.image_grid(
                    samples.images[:shown],
                    samples.prompts[:shown],
                    local["reward"][:shown].tolist(),
                    title=f"epoch {done}",
                )
                plots.save_image(grid, out / "grids" / f"epoch-{done:06d}.png")
                logger.log_image(done, "samples", np.asarray(grid))
            if (run.save_every > 0 and done % run.save_every == 0) or done == run.epochs:
                _checkpoint(acc, out, TrainingState(done, updater.global_step), *saved)

    records = read_metrics(out) if acc.is_main_process else []
    result = _finish(out, records, after, before_path, time.perf_counter() - started, acc.is_main_process)
    acc.wait_for_everyone()
    return result


def _checkpoint(acc: Accelerator, out: Path, state: TrainingState, *objects: Any) -> None:
    policy, optimizer, ema, generators, tracker, config = objects
    rng_states = gather_object([capture_rng_state(generators)])  # one per rank, rank order
    if acc.is_main_process:
        save_checkpoint(
            out,
            state,
            policy,
            optimizer,
            ema,
            rng_states=rng_states,
            stat_tracker=tracker,
            config=config,
            keep=config.run.keep_checkpoints,
        )
    acc.wait_for_everyone()


def _finish(
    out: Path, records: list[dict], after: dict | None, before_path: Path, wall_s: float, is_main: bool
) -> RunResult:
    """Reward curve, before/after grid and summary.json (main process); the start/end training rewards."""
    rewards = [r["reward_mean"] for r in records if "reward_mean" in r]
    window = max(1, min(10, len(rewards) // 5))
    start = float(np.mean(rewards[:window])) if rewards else float("nan")
    end = float(np.mean(rewards[-window:])) if rewards else float("nan")
    result = RunResult(out, start, end, wall_s)
    if not is_main or not rewards:
        return result
    plots.reward_curve(records, out / "reward_curve.png", window=window, subtitle=result.summary)
    if after is not None and before_path.exists():
        before = np.load(before_path)
        grid = plots.before_after_grid(
            after["prompts"],
            list(before["images"]),
            after["images"],
            before["rewards"].tolist(),
            after["rewards"],
            labels=("before", "after"),
        )
        plots.save_image(grid, out / "before_after.png")
    summary = {
        "reward_start": start,
        "reward_end": end,
        "summary": result.summary,
        "wall_s": wall_s,
        "epochs_averaged": window,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return result


def _dump(directory: Path, epoch: int, rank: int, *values: Any) -> None:
    """Per-rank record of what went into the advantages (tests check groups span ranks)."""
    keys = ("prompts", "rewards", "advantages", "all_prompts", "all_rewards", "all_advantages")
    data = {k: v.tolist() if isinstance(v, np.ndarray) else list(v) for k, v in zip(keys, values, strict=True)}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"epoch{epoch:04d}-rank{rank}.json").write_text(json.dumps({"epoch": epoch, "rank": rank, **data}))
