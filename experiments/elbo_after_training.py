"""ELBO reached after a fixed number of training iterations, K = 1 (learned Gaussian) vs K = 5 GMP.

Prints one row per (target, K): evaluation ELBO (2000 samples), log Z estimate, ESS and wall time.
The default budget is reduced for a 2-core CPU (batch and N below the paper's) and printed;
`--paper` uses the authors' batch per target (funnel 2000, credit 1000) and N = 128.

Usage: python -m experiments.elbo_after_training [--iters 2000] [--batch 500] [--steps 64]
                                                  [--paper] [--targets funnel credit]
       python -m experiments.elbo_after_training --quick  # smoke: 20 iterations, batch 64, N = 16
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from trainers import Trainer, TrainerConfig

TARGETS = {"funnel": {"dim": 10}, "credit": {}}
PAPER_BATCH = {"funnel": 2000, "credit": 1000}


def run(job: tuple[str, int, argparse.Namespace]) -> tuple[str, int, dict[str, float], float]:
    """Train one (target, K) configuration and evaluate it."""
    name, k, args = job
    torch.set_num_threads(1)
    config = TrainerConfig(
        target={"name": name, "kwargs": TARGETS[name]},
        batch_size=PAPER_BATCH[name] if args.paper else args.batch,
        time={"n_steps": args.steps, "init_dt": 0.01},
        prior={"k_max": k, "init_mean_std": 1.0 if k > 1 else 0.0},
        seed=args.seed,
    )
    trainer = Trainer(config)
    start = time.perf_counter()
    trainer.train(args.iters)
    return name, k, trainer.evaluate(2000).metrics, time.perf_counter() - start


def main() -> None:
    """Train every (target, K) configuration in a process pool and print its evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--steps", type=int, default=64, help="diffusion steps N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="20 iterations, batch 64, N = 16")
    parser.add_argument("--paper", action="store_true", help="the authors' batch and N = 128")
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS), default=list(TARGETS))
    args = parser.parse_args()
    if args.quick:
        args.iters, args.batch, args.steps = 20, 64, 16
    if args.paper:
        args.steps = 128
    batch = ", ".join(f"{n} {PAPER_BATCH[n]}" for n in args.targets) if args.paper else args.batch
    print(f"budget: {args.iters} iterations, batch {batch}, N = {args.steps}, seed {args.seed}")
    jobs = [(name, k, args) for name in args.targets for k in (1, 5)]
    with ProcessPoolExecutor(args.workers) as pool:
        for name, k, metrics, seconds in pool.map(run, jobs):
            print(
                f"{name:8s} K={k}: ELBO {metrics['elbo']:9.3f}  log Z est {metrics['log_z']:9.3f}"
                f"  ESS {metrics['ess']:.3f}  ({seconds:.0f} s)"
            )


if __name__ == "__main__":
    main()
