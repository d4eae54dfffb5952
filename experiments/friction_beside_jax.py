"""Which value the time schedule learns, sigma2 or the friction, beside the authors' JAX step.

The authors' code learns the friction (sigma2 = 1 / softplus(raw)); `time.learned_value: sigma2`
learns sigma2 = softplus(raw) itself. Both start at sigma2 = 1, but Adam moves the raw parameter
by about its learning rate per iteration, so the two let eta_n = dt_n sigma2 grow at different
paces. This trains the learned Gaussian of a paper-budget DIS study file (authors' settings) at a
smaller size (batch 500, N = 64, width 64, 64 time features, the authors' learning rates) with
each choice and each seed, and prints the training ELBO every 500 iterations and the mean of the
last 5 records (every 100 iterations) beside the authors' JAX step's curves at the same size:

    python -m bench.jax_dis_step --target credit --prior-scale 10 --no-target-score --authors \
        --batch 500 --n-steps 64 --hidden 64 --curve 3000 --threads 1 --seed S > jax_S.json

`--target-score` feeds the target score to our network (the authors' code does not; DIS in gmp
does by default), to see whether that changes how far training gets.

Usage: python -m experiments.friction_beside_jax [--target credit] [--iterations 3000]
           [--seeds 0 1] [--learned sigma2 friction] [--target-score]
           [--jax jax_0.json jax_1.json] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from orchestrator.spec import load_spec
from trainers import Trainer

STUDIES = Path(__file__).resolve().parents[1] / "examples" / "paper_budget"
SMALLER = {
    "batch_size": 500,
    "time.n_steps": 64,
    "network.hidden": 64,
    "network.n_time_features": 64,
    "prior.k_max": 1,
}
RECORD_EVERY, SHOW_EVERY, LAST = 100, 500, 5  # shown every 1,000 beyond 3,000


def curve(job: tuple[str, str, int, int, bool]) -> list[float]:
    """Training ELBOs every RECORD_EVERY iterations of one (target, learned value, seed,
    iterations, target score fed)."""
    target, learned, seed, iterations, target_score = job
    torch.set_num_threads(1)
    spec = load_spec(STUDIES / f"{target}_dis.yaml")
    settings = {**SMALLER, "time.learned_value": learned, "seed": seed}
    config = spec.trainer_config({**settings, "network.use_target_score": target_score})
    trainer = Trainer(config)
    elbos = []
    while trainer.iteration < iterations:
        trainer.train(RECORD_EVERY)
        elbos.append(trainer.history["elbo"][-1])
    return elbos


def jax_curve(path: Path) -> list[float]:
    """The training ELBOs of a curve file written by bench.jax_dis_step (every 100 iterations)."""
    return [row["train_elbo"] for row in json.loads(path.read_text())]


def main() -> None:
    """Train each (learned value, seed), then print one row per curve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=("funnel", "credit"), default="credit")
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--learned", nargs="+", choices=("sigma2", "friction"), default=["sigma2", "friction"]
    )
    parser.add_argument("--target-score", action="store_true", help="feed it to the network")
    parser.add_argument("--jax", type=Path, nargs="*", default=[], help="JAX curve files")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [
        (args.target, learned, seed, args.iterations, args.target_score)
        for learned in args.learned
        for seed in args.seeds
    ]
    with ProcessPoolExecutor(args.workers) as pool:
        curves = {
            (job[1], job[2]): elbos for job, elbos in zip(jobs, pool.map(curve, jobs), strict=True)
        }
    fed = ", target score fed" if args.target_score else ""
    rows = [
        (f"ours, learns {learned}{fed}, seed {seed}", c) for (learned, seed), c in curves.items()
    ]
    rows += [(f"authors' JAX step, {path.stem}", jax_curve(path)) for path in args.jax]
    show_every = SHOW_EVERY if args.iterations <= 3000 else 2 * SHOW_EVERY
    step = show_every // RECORD_EVERY
    shown = range(step - 1, args.iterations // RECORD_EVERY, step)
    decimals = 1 if max(abs(e) for _, c in rows for e in c) >= 10 else 3
    print(
        f"{args.target}, DIS, learned Gaussian, batch 500, N = 64, width 64; training ELBO "
        f"(one batch) by iteration, and the mean of the last {LAST} records"
    )
    header = [f"{(i + 1) * RECORD_EVERY:,}" for i in shown] + [f"last {LAST}"]
    print("| run | " + " | ".join(header) + " |")
    print("|---" * (len(header) + 1) + "|")
    for label, elbos in rows:
        values = [f"{elbos[i]:.{decimals}f}" for i in shown if i < len(elbos)]
        values.append(f"{statistics.fmean(elbos[-LAST:]):.{decimals}f}")
        print(f"| {label} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
