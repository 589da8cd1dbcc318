"""`python -m rewardflow_trainer.pretrain shapes|evaluate` (also `rewardflow pretrain ...`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

PROG = "python -m rewardflow_trainer.pretrain"
EXIT_INTERRUPTED = 130


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Pretrain the tiny SD3 model of the shapes world.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("shapes", help="train the VAE, then the transformer; write DIR/model (diffusers format)")
    p.add_argument("--out", type=Path, required=True, help="run folder: checkpoint/, log.json, loss_curve.png, model/")
    p.add_argument("--seed", type=int, default=0, help="weights, data and noise seed (default 0)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the 105/21 prompt split (default 0)")
    p.add_argument("--vae-minutes", type=float, default=5.0, help="VAE training time (default 5)")
    p.add_argument("--vae-steps", type=int, default=None, help="VAE steps instead of --vae-minutes")
    p.add_argument("--minutes", type=float, default=30.0, help="transformer training time (default 30)")
    p.add_argument("--steps", type=int, default=None, help="transformer steps instead of --minutes")
    p.add_argument("--batch", type=int, default=64, help="transformer batch (default 64)")
    p.add_argument("--vae-batch", type=int, default=32, help="VAE batch (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="transformer AdamW learning rate (default 1e-3)")
    p.add_argument("--shift", type=float, default=1.0, help="sampling schedule shift written to scheduler/ (default 1)")
    p.add_argument("--guidance", type=float, default=3.0, help="CFG scale written to sampling.json (default 3)")
    p.add_argument("--sample-steps", type=int, default=20, help="ODE steps written to sampling.json (default 20)")
    p.add_argument("--fp32", action="store_true", help="export transformer and VAE in float32 (default float16)")
    p.add_argument("--checkpoint-minutes", type=float, default=3.0, help="checkpoint interval (default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from DIR/checkpoint (a finished run re-exports; with a larger budget it trains on)",
    )

    e = sub.add_parser("evaluate", help="held-out strict GenEval accuracy per tag (shapes detector)")
    e.add_argument("model", type=Path, help="a folder written by `shapes` (DIR/model or the shipped weights)")
    e.add_argument("--sampler", nargs="+", default=["family"], choices=("family", "pipeline", "vae"))
    e.add_argument("--guidance", nargs="+", type=float, default=[3.0], help="CFG scales (default 3)")
    e.add_argument("--steps", nargs="+", type=int, default=[20], help="ODE steps (default 20)")
    e.add_argument("--shift", nargs="+", type=float, default=None, help="schedule shifts (default: the folder's)")
    e.add_argument("--split", choices=("test", "train"), default="test", help="prompt split (default test)")
    e.add_argument("--samples", type=int, default=16, help="images per prompt (default 16)")
    e.add_argument("--seed", type=int, default=0, help="first image seed (default 0)")
    e.add_argument("--json", type=Path, default=None, help="also write the results here")
    e.add_argument("--grid", type=Path, default=None, help="a PNG of the first setting's images (4 per prompt)")
    e.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser


def run_shapes(args: argparse.Namespace) -> int:
    from rewardflow_trainer.pretrain.run import Budget, Interrupted, Settings, pretrain
    from rewardflow_trainer.pretrain.stages import Hyper

    torch.set_num_threads(args.threads)
    settings = Settings(
        out=args.out,
        seed=args.seed,
        split_seed=args.split_seed,
        vae=Budget(steps=args.vae_steps, minutes=args.vae_minutes),
        transformer=Budget(steps=args.steps, minutes=args.minutes),
        hyper=Hyper(lr=args.lr, batch=args.batch, vae_batch=args.vae_batch),
        shift=args.shift,
        guidance=args.guidance,
        sample_steps=args.sample_steps,
        half=not args.fp32,
        checkpoint_minutes=args.checkpoint_minutes,
    )
    try:
        folder = pretrain(settings, resume=args.resume)
    except Interrupted as exc:
        print(f"{exc}; continue with the same command plus --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"model written to {folder}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    import json

    from diffusers import FlowMatchEulerDiscreteScheduler

    from rewardflow_trainer.pretrain import evaluate as ev

    torch.set_num_threads(args.threads)
    shifts = args.shift or [FlowMatchEulerDiscreteScheduler.from_pretrained(args.model, subfolder="scheduler").shift]
    grid = ev.settings_grid(args.sampler, args.guidance, args.steps, shifts)
    results = ev.evaluate(
        args.model, grid, split=args.split, samples=args.samples, seed=args.seed, keep_images=args.grid is not None
    )
    if args.grid is not None:
        ev.save_grid(results[0], args.model, args.split, args.grid)
    print(ev.table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "images"} for r in results], indent=1))
    return 0


def main(argv: Sequence[str] | None = None, prog: str = PROG) -> int:
    args = _parser(prog).parse_args(argv)
    return run_evaluate(args) if args.command == "evaluate" else run_shapes(args)
