"""IMR's new-component scale, side by side: `imr.new_std` init vs mean_active vs laplace.

Trains DIS with GMP+IMR at the CPU budget of experiments/reproduce.py (its study settings,
seed 0) on funnel d=10 and gmm40 d=2, once per scale rule, and prints per run the final ELBO,
EMC (gmm40) and the mean scale of each component IMR added.

Usage: python -m experiments.imr_new_scale [--targets funnel gmm40] [--seeds 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ProcessPoolExecutor

import torch

from experiments.reproduce import study
from orchestrator.spec import StudySpec
from trainers import Trainer

RULES = ("init", "mean_active", "laplace")
LAST_EVALUATIONS = 3  # the reported ELBO is the mean over this many final evaluations


def run(job: tuple[str, str, int]) -> tuple[str, str, int, dict[str, float], list[float], float]:
    """Train one (target, rule, seed) and return its final metrics and the added scales."""
    target, rule, seed = job
    torch.set_num_threads(1)
    spec = StudySpec.model_validate(study(target, "dis", "gmp-imr", 1, None))
    config = spec.trainer_config({"imr.new_std": rule}, seed=seed)
    trainer = Trainer(config)
    interval = spec.budget.eval_interval
    start = time.perf_counter()
    history = []
    while trainer.iteration < spec.budget.iterations:
        trainer.train(interval)
        history.append(trainer.evaluate().metrics)
    final = {
        key: statistics.fmean(h[key] for h in history[-LAST_EVALUATIONS:])
        for key in ("elbo", "emc")
        if key in history[-1]
    }
    scales = [event["scale"]["mean"] for event in trainer.imr_events]
    return target, rule, seed, final, scales, time.perf_counter() - start


def main() -> None:
    """Run every (target, rule, seed) in a process pool and print one row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["funnel", "gmm40"])
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [(t, rule, s) for t in args.targets for rule in RULES for s in range(args.seeds)]
    print(
        "DIS, GMP+IMR at experiments/reproduce.py's budget, seed 0 up; ELBO and EMC: mean of the "
        f"last {LAST_EVALUATIONS} evaluations"
    )
    with ProcessPoolExecutor(args.workers) as pool:
        for target, rule, seed, final, scales, seconds in pool.map(run, jobs):
            metrics = "  ".join(f"{k} {v:9.3f}" for k, v in final.items())
            added = ", ".join(f"{s:.2f}" for s in scales[:8]) + (" ..." if len(scales) > 8 else "")
            print(
                f"{target:7s} {rule:11s} seed {seed}: {metrics}  added scales [{added}]"
                f"  ({seconds:.0f} s)"
            )


if __name__ == "__main__":
    main()
