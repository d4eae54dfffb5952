"""IMR in high dimension: where the candidate chains start decides which modes GMP+IMR finds.

Trains DIS at the CPU budget of experiments/reproduce.py (its study settings for gmm40 and mos, in
d = 50) with three prior families side by side: the learned Gaussian, GMP+IMR whose MALA chains
start from the current components (`imr.chain_starts: component`) and GMP+IMR whose chains start
over the target's support (`support`, with a capped-drift Langevin burn-in). Both IMR variants
place a new component's scale by the target's curvature (`new_std: laplace`), so the chain
starts are the only difference. Prints one Markdown row per run: EMC, ELBO, log Z estimate,
Sinkhorn (mean of the last 3 of 10 evaluations), modes holding a component mean (and the most
component means on one mode), IMR's target evaluations beside training's, wall and CPU time.

Usage: python -m experiments.imr_high_dim [--targets gmm40 mos] [--iterations 3000] [--seeds 1]
                                    [--variants gauss-learned imr-component imr-support]
       python -m experiments.imr_high_dim --dim 2 --targets gmm40 funnel --iterations 500 --seeds 2
                                    --variants imr-component imr-support   # before/after
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import torch

from experiments.reproduce import study
from orchestrator.spec import StudySpec
from trainers import Trainer

MULTIMODAL = ("gmm40", "mos")  # targets whose dimension --dim sets and whose modes are known
MALA_FAR: dict[str, Any] = {  # support starts: chains begin 100+ units from the nearest mode
    "n_chains": 64,
    "n_steps": 100,
    "step_size": 0.1,
    "per_chain": True,
    "burn_in_steps": 100,
    "burn_in_step_size": 0.5,
    "ascent_steps": 100,
}
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "gauss-learned": ("gauss-learned", {}),
    "imr-component": ("gmp-imr", {"imr.new_std": "laplace", "imr.chain_starts": "component"}),
    "imr-support": (
        "gmp-imr",
        {"imr.new_std": "laplace", "imr.chain_starts": "support", "imr.mala": MALA_FAR},
    ),
    "imr-support-capped": (
        "gmp-imr",
        {
            "imr.new_std": "laplace",
            "imr.chain_starts": "support",
            "imr.mala": MALA_FAR,
            "imr.selection": "capped",
        },
    ),
}
LAST = 3  # the reported metrics are the mean over this many final evaluations
EVALUATIONS = 10


def trainer_config(target: str, variant: str, iterations: int, seed: int, dim: int) -> Any:
    """One run's trainer configuration: reproduce.py's study (gmm40 and mos in `dim`), plus the
    variant; without known modes (funnel) the chains take no ascent (a funnel's density grows
    without bound down its neck)."""
    family, overrides = VARIANTS[variant]
    file = study(target, "dis", family, 1, iterations)
    if target in MULTIMODAL:
        file["target"]["kwargs"]["dim"] = dim
    elif "imr.mala" in overrides:
        overrides = {**overrides, "imr.mala": {**overrides["imr.mala"], "ascent_steps": 0}}
    return StudySpec.model_validate(file).trainer_config(overrides, seed=seed)


def run(job: tuple[str, str, int, int, int]) -> dict[str, Any]:
    """Train one (target, variant, seed); its final metrics and costs."""
    target, variant, iterations, seed, dim = job
    torch.set_num_threads(1)
    trainer = Trainer(trainer_config(target, variant, iterations, seed, dim))
    wall, cpu = time.perf_counter(), time.process_time()
    history = []
    while trainer.iteration < iterations:
        trainer.train(max(1, iterations // EVALUATIONS))
        history.append(trainer.evaluate().metrics)
    keys = ("emc", "elbo", "log_z", "ess", "sinkhorn", "target_evals", "imr_target_evals")
    final = {key: statistics.fmean(h.get(key, math.nan) for h in history[-LAST:]) for key in keys}
    prior = trainer.prior
    modes = []
    if trainer.target.n_modes is not None:
        modes = trainer.target.mode_of(prior.means[prior.active].detach()).tolist()
    return {
        "target": target,
        "variant": variant,
        "seed": seed,
        **final,
        "k": prior.n_active,
        "modes_with_component": len(set(modes)) if modes else "-",
        "most_on_one_mode": max(modes.count(m) for m in set(modes)) if modes else "-",
        "landed_on_covered": sum(e.get("mode_already_covered", False) for e in trainer.imr_events),
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
    }


def main() -> None:
    """Every (target, variant, seed) in a process pool; one table row each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["gmm40", "mos"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=50, help="dimension of gmm40 and mos")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [
        (t, v, args.iterations, s, args.dim)
        for t in args.targets
        for s in range(args.seeds)
        for v in args.variants
    ]
    print(
        f"DIS, gmm40 and mos in d = {args.dim}, {args.iterations} iterations, "
        "experiments/reproduce.py's budget otherwise; "
        f"metrics: mean of the last {LAST} of {EVALUATIONS} evaluations; load average "
        f"{os.getloadavg()[0]:.2f} at the start\n"
    )
    print(
        "| target | prior | seed | EMC | ELBO | log Z est. | ESS | Sinkhorn | K | modes with a "
        "component (most on one) | IMR new mean on a covered mode | training target evals | "
        "IMR target evals | wall s | CPU s |"
    )
    print("|---" * 15 + "|")
    with ProcessPoolExecutor(args.workers) as pool:
        for r in pool.map(run, jobs):
            print(
                f"| {r['target']} | {r['variant']} | {r['seed']} | {r['emc']:.3f} | "
                f"{r['elbo']:.2f} | {r['log_z']:.2f} | {r['ess']:.3f} | {r['sinkhorn']:.1f} | "
                f"{r['k']} | "
                f"{r['modes_with_component']} ({r['most_on_one_mode']}) | "
                f"{r['landed_on_covered']} | {r['target_evals']:.3g} | "
                f"{r['imr_target_evals']:.3g} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
