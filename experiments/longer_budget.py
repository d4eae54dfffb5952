"""Where funnel's priors get with more than the paper's 10,000 iterations, at a smaller size.

The paper-budget funnel study (examples/paper_budget/funnel_dis.yaml: the authors' settings,
learned Gaussian K = 1 against a K = 5 GMP) ends below the paper's numbers at 10,000 iterations,
with the learned Gaussian's ELBO still rising. The authors' code holds its learning rate
constant for the first 60,000 iterations, and their earlier benchmark trains DIS for 40,000; so
this trains both priors of the study for `--iterations` (default 40,000) at the smaller size of
experiments/friction_beside_jax.py (batch 500, N = 64, width 64), one process each, and
evaluates them on the paper's protocol at each milestone: 2000 samples, the mean of 5
evaluations 100 iterations apart ending at the milestone.

`--resume DIR [DIR...]` instead continues saved trainers (a trial's checkpoint directory,
ROOT/tune/STUDY/TRIAL/checkpoint_NNNNNN, at the trial's own size) from where they stopped to
`--iterations`.

Usage: python -m experiments.longer_budget [--iterations 40000] [--every 10000] [--seed 0]
           [--k 1 5] [--out longer_budget.json]
       python -m experiments.longer_budget --resume TRIAL_CHECKPOINT ... --iterations 16000
           --every 2000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from experiments.friction_beside_jax import SMALLER, STUDIES
from orchestrator.spec import load_spec
from trainers import Trainer
from trainers.metrics import ELBO, ESS

EVALUATIONS, APART, SAMPLES = 5, 100, 2000  # the paper's protocol at each milestone


def milestones(iterations: int, every: int) -> list[int]:
    """The iterations at which the trainers are evaluated."""
    return list(range(every, iterations + 1, every))


def trainer_for(source: int | Path, seed: int) -> Trainer:
    """The study's trainer at the smaller size with `source` prior components, or the trainer
    saved in checkpoint directory `source`."""
    if isinstance(source, Path):
        return Trainer.load(source)
    spec = load_spec(STUDIES / "funnel_dis.yaml")
    return Trainer(spec.trainer_config({**SMALLER, "prior.k_max": source, "seed": seed}))


def train(job: tuple[int | Path, int, int, int]) -> dict:
    """Train a trainer (`trainer_for`) to each milestone past its iteration; its evaluations
    there (mean of EVALUATIONS, APART iterations apart) and the wall time."""
    source, seed, iterations, every = job
    torch.set_num_threads(1)
    trainer = trainer_for(source, seed)
    k = trainer.config.prior.k_max
    start, rows = time.perf_counter(), []
    for milestone in milestones(iterations, every):
        first = milestone - (EVALUATIONS - 1) * APART
        if first < trainer.iteration:
            continue
        trainer.train(first - trainer.iteration)
        evaluations = []
        for _ in range(EVALUATIONS):
            evaluations.append(trainer.evaluate(SAMPLES).metrics)
            if trainer.iteration < milestone:
                trainer.train(APART)
        row = {
            "iteration": milestone,
            "elbo": statistics.fmean(e[ELBO] for e in evaluations),
            "ess": statistics.fmean(e[ESS] for e in evaluations),
            "train_elbo_last": trainer.history[ELBO][-1],
            "wall_s": time.perf_counter() - start,
        }
        rows.append(row)
        print(f"K = {k}: {json.dumps(row)}", flush=True)
    return {"k": k, "seed": trainer.config.seed, "batch": trainer.config.batch_size, "rows": rows}


def main() -> None:
    """Train each prior in its own process and print a table by milestone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=40_000)
    parser.add_argument("--every", type=int, default=10_000, help="iterations between milestones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--resume", type=Path, nargs="+", help="continue these checkpoints")
    parser.add_argument("--out", type=Path, help="also write the rows here (JSON)")
    args = parser.parse_args()
    if args.every < EVALUATIONS * APART or args.iterations < args.every:
        parser.error(f"--every must be at least {EVALUATIONS * APART} and at most --iterations")
    what = (
        "the saved trainers, at their own size"
        if args.resume
        else f"the paper-budget study's settings at batch 500, N = 64, width 64; seed {args.seed}"
    )
    print(
        f"funnel d = 10, DIS, {what}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    sources: list[int | Path] = list(args.resume or args.k)
    jobs = [(source, args.seed, args.iterations, args.every) for source in sources]
    with ProcessPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(train, jobs))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    shown = sorted({row["iteration"] for result in results for row in result["rows"]})
    header = [f"{m:,}" for m in shown]
    print(
        f"\nevaluation ELBO / ESS ({SAMPLES} samples, mean of {EVALUATIONS} evaluations {APART} "
        "iterations apart)"
    )
    print("| prior | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for result in results:
        label = "learned Gaussian" if result["k"] == 1 else f"GMP, K = {result['k']}"
        by_iteration = {r["iteration"]: r for r in result["rows"]}
        cells = [
            f"{by_iteration[m]['elbo']:.3f} / {by_iteration[m]['ess']:.2f}"
            if m in by_iteration
            else ""
            for m in shown
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    hours = max(r["rows"][-1]["wall_s"] for r in results) / 3600
    print(f"wall time {hours:.2f} h (slowest prior, one core each)")


if __name__ == "__main__":
    main()
