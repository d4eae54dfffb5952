"""Mode coverage on gmm40 in high dimension: learned Gaussian vs GMP+IMR, trainer alone.

Trains DIS at the CPU budget of bench/reproduce.py (its gmm40 study settings; only the dimension
differs) and prints, every `--every` iterations, per prior family: K, ELBO, log Z estimate, ESS,
EMC, the number of target modes that hold a sample, and the mean prior scale.

Usage: python bench/gmm40_high_dim.py [--dim 50] [--iterations 3000] [--every 500] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import study  # bench/ is not a package

from orchestrator.spec import StudySpec
from trainers import Trainer

VARIANTS = ("gauss-learned", "gmp-imr")


def run(job: tuple[str, argparse.Namespace]) -> list[str]:
    """Train one prior family; a printed line per evaluation."""
    variant, args = job
    torch.set_num_threads(1)
    file = study("gmm40", "dis", variant, 1, args.iterations)
    file["target"]["kwargs"]["dim"] = args.dim
    config = StudySpec.model_validate(file).trainer_config({}, seed=args.seed)
    trainer = Trainer(config)
    start, lines = time.perf_counter(), []
    while trainer.iteration < args.iterations:
        trainer.train(min(args.every, args.iterations - trainer.iteration))
        result = trainer.evaluate()
        metrics = result.metrics
        hit = int(trainer.target.mode_of(result.samples).unique().numel())
        scale = float(trainer.prior.scales[trainer.prior.active].mean().detach())
        lines.append(
            f"{variant:13s} it {trainer.iteration:5d}  K {trainer.prior.n_active:2d}  "
            f"ELBO {metrics['elbo']:8.2f}  log Z est {metrics['log_z']:7.2f}  "
            f"ESS {metrics['ess']:.3f}  EMC {metrics['emc']:.3f}  modes hit {hit:2d}  "
            f"mean scale {scale:5.2f}  ({time.perf_counter() - start:.0f} s)"
        )
    return lines


def main() -> None:
    """Both prior families in parallel processes; their evaluations, one family after the other."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=50)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--every", type=int, default=500, help="iterations between evaluations")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"gmm40 d={args.dim}, DIS, {args.iterations} iterations, seed {args.seed}")
    with ProcessPoolExecutor(len(VARIANTS)) as pool:
        for lines in pool.map(run, [(variant, args) for variant in VARIANTS]):
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
