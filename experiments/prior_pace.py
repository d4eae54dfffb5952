"""How far the prior can move in the paper's budget: funnel d=10 or credit, DIS, the learned
Gaussian and a 5-component GMP, the prior's learning rate at the authors' 5e-4 and at 10x that.

Adam moves a parameter by at most about its learning rate per iteration, so at 5e-4 a mean or a
softplus scale parameter moves at most about 5 in 10,000 iterations. The funnel's first
coordinate has scale 3 (the softplus parameter must go from 0.54 to 2.95) and a GMP's components
must spread along it; credit's posterior is far narrower than the prior's start, so every
component must contract. This trains the paper-budget study's settings (examples/paper_budget/
TARGET_dis.yaml) at a smaller batch, fewer steps and a narrower network, so that each run takes
minutes, and prints per run the ELBO (mean of the last 5 evaluations on 2000 samples), the
prior's mean scale over all coordinates and along the first, and the spread of the component
means along the first.

Usage: python -m experiments.prior_pace [--target funnel|credit] [--iterations 3000] [--workers 2]
       [--k 1 5] [--lr-prior 5e-4 5e-3] [--init-mean-std S ...]

--init-mean-std draws the components' means from N(0, S^2 I) instead of the study file's setting,
to see whether means that start apart over the target's support reach it sooner.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from pathlib import Path

import torch

from orchestrator.spec import load_spec
from trainers import Trainer

STUDIES = Path(__file__).resolve().parents[1] / "examples" / "paper_budget"
SMALLER = {"batch_size": 500, "time.n_steps": 64, "network.hidden": 64}
LAST_EVALUATIONS = 5
EVAL_INTERVAL = 100


def study_file(target: str) -> Path:
    """The paper-budget DIS study file of `target`."""
    return STUDIES / f"{target}_dis.yaml"


def run(job: tuple[str, int, float, float | None, int]) -> dict[str, float]:
    """Train one (K, prior learning rate, spread of the initial means) on `target` for
    `iterations` and summarise its prior; a spread of None keeps the study file's."""
    target, k, lr_prior, init_mean_std, iterations = job
    torch.set_num_threads(1)
    spec = load_spec(study_file(target))
    overrides = {**SMALLER, "prior.k_max": k, "optim.lr_prior": lr_prior}
    if init_mean_std is not None:
        overrides["prior.init_mean_std"] = init_mean_std
    config = spec.trainer_config(overrides)
    trainer = Trainer(config)
    start = time.perf_counter()
    elbos = []
    while trainer.iteration < iterations:
        trainer.train(EVAL_INTERVAL)
        elbos.append(trainer.evaluate().metrics["elbo"])
    prior = trainer.prior
    first = prior.means[prior.active, 0].detach()
    scales = prior.scales[prior.active].detach()
    return {
        "k": k,
        "lr_prior": lr_prior,
        "init_mean_std": config.prior.init_mean_std,
        "elbo": statistics.fmean(elbos[-LAST_EVALUATIONS:]),
        "scale": scales.mean().item(),
        "scale_x0": scales[:, 0].mean().item(),
        "means_x0": f"{first.min().item():+.2f}..{first.max().item():+.2f}",
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    """Run every (K, learning rate, initial spread) in a process pool and print one row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("funnel", "credit"), default="funnel")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--lr-prior", type=float, nargs="+", default=[5e-4, 5e-3])
    parser.add_argument("--init-mean-std", type=float, nargs="+", default=[None])
    args = parser.parse_args()
    jobs = [
        (args.target, k, lr, spread, args.iterations)
        for lr, spread, k in product(args.lr_prior, args.init_mean_std, args.k)
    ]
    print(
        f"{args.target}, DIS, {args.iterations} iterations at batch 500, N = 64, width 64 (else "
        f"as {study_file(args.target).name}); ELBO: mean of the last {LAST_EVALUATIONS} "
        "evaluations on 2000 samples"
    )
    print("K   lr_prior  init means  ELBO      mean scale  scale along x0  means along x0  seconds")
    with ProcessPoolExecutor(args.workers) as pool:
        for row in pool.map(run, jobs):
            print(
                f"{row['k']:<3d} {row['lr_prior']:.0e}   {row['init_mean_std']:10.2f}"
                f"  {row['elbo']:8.3f}  {row['scale']:10.3f}"
                f"  {row['scale_x0']:14.2f}"
                f"  {row['means_x0']:14s}  {row['seconds']:.0f}"
            )


if __name__ == "__main__":
    main()
