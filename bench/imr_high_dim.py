"""IMR in high dimension: where the candidate chains start decides which modes GMP+IMR finds.

Trains DIS at the CPU budget of bench/reproduce.py (its study settings for gmm40 and mos, in
d = 50) with three prior families side by side: the learned Gaussian, GMP+IMR whose MALA chains
start from the current components (`imr.chain_starts: component`) and GMP+IMR whose chains start
over the target's support (`support`, with a capped-drift Langevin burn-in). Both IMR variants
place a new component's scale by the target's curvature (`new_std: laplace`), so the chain
starts are the only difference. Prints one Markdown row per run: EMC, ELBO, log Z estimate,
Sinkhorn (mean of the last 3 of 10 evaluations), modes holding a component mean (and the most
component means on one mode), IMR's target evaluations beside training's, wall and CPU time.

Usage: python bench/imr_high_dim.py [--targets gmm40 mos] [--iterations 3000] [--seeds 1]
                                    [--variants gauss-learned imr-component imr-support]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import study  # bench/ is not a package

from orchestrator.spec import StudySpec
from trainers import Trainer

DIM = 50
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


def trainer_config(target: str, variant: str, iterations: int, seed: int) -> Any:
    """The trainer configuration of one run: reproduce.py's study in d = 50, plus the variant."""
    family, overrides = VARIANTS[variant]
    file = study(target, "dis", family, 1, iterations)
    file["target"]["kwargs"]["dim"] = DIM
    config = StudySpec.model_validate(file).trainer_config({}, seed=seed)
    data = config.model_dump()
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = data
        for key in parents:
            node = node[key]
        node[leaf] = value if not isinstance(value, dict) else {**node[leaf], **value}
    return type(config).model_validate(data)


def run(job: tuple[str, str, int, int]) -> dict[str, Any]:
    """Train one (target, variant, seed); its final metrics and costs."""
    target, variant, iterations, seed = job
    torch.set_num_threads(1)
    trainer = Trainer(trainer_config(target, variant, iterations, seed))
    wall, cpu = time.perf_counter(), time.process_time()
    history = []
    while trainer.iteration < iterations:
        trainer.train(max(1, iterations // EVALUATIONS))
        history.append(trainer.evaluate().metrics)
    final = {
        key: statistics.fmean(h[key] for h in history[-LAST:])
        for key in ("emc", "elbo", "log_z", "sinkhorn", "target_evals", "imr_target_evals")
    }
    prior = trainer.prior
    modes = trainer.target.mode_of(prior.means[prior.active].detach()).tolist()
    return {
        "target": target,
        "variant": variant,
        "seed": seed,
        **final,
        "k": prior.n_active,
        "modes_with_component": len(set(modes)),
        "most_on_one_mode": max(modes.count(m) for m in set(modes)),
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
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    jobs = [
        (t, v, args.iterations, s)
        for t in args.targets
        for s in range(args.seeds)
        for v in args.variants
    ]
    print(
        f"DIS in d = {DIM}, {args.iterations} iterations, bench/reproduce.py's budget otherwise; "
        f"metrics: mean of the last {LAST} of {EVALUATIONS} evaluations; load average "
        f"{os.getloadavg()[0]:.2f} at the start\n"
    )
    print(
        "| target | prior | seed | EMC | ELBO | log Z est. | Sinkhorn | K | modes with a "
        "component (most on one) | IMR new mean on a covered mode | training target evals | "
        "IMR target evals | wall s | CPU s |"
    )
    print("|---" * 14 + "|")
    with ProcessPoolExecutor(args.workers) as pool:
        for r in pool.map(run, jobs):
            print(
                f"| {r['target']} | {r['variant']} | {r['seed']} | {r['emc']:.3f} | "
                f"{r['elbo']:.2f} | {r['log_z']:.2f} | {r['sinkhorn']:.1f} | {r['k']} | "
                f"{r['modes_with_component']} ({r['most_on_one_mode']}) | "
                f"{r['landed_on_covered']} | {r['target_evals']:.3g} | "
                f"{r['imr_target_evals']:.3g} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
