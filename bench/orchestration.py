"""Orchestration overheads, measured side by side in one run on this machine.

Prints:
1. parallel efficiency of a study of 8 equal short trials on 2 CPU workers:
   ideal wall (sum of in-process trial times / 2) over measured wall, after subtracting the
   study's fixed start-up (Ray start, Tune set-up, until the first trial starts), and that start-up;
2. overhead per reported evaluation (a Tune trial with many evaluations vs the loop in-process);
3. speedup of IMR's per-component MALA Ray tasks over running them one after another.

Usage: python -m bench.orchestration [--quick] [--imr-only]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import ray
import torch

import targets
from orchestrator.driver import run_study
from orchestrator.spec import parse_spec
from orchestrator.tasks import RayTaskExecutor
from trainers import GaussianMixturePrior, Trainer
from trainers.config import IMRConfig, MalaConfig
from trainers.imr import propose_component

STUDY: dict[str, Any] = {
    "name": "bench",
    "target": {"name": "funnel", "kwargs": {"dim": 10}},
    "fixed": {
        "batch_size": 256,
        "eval_samples": 512,
        "time": {"n_steps": 32},
        "network": {"hidden": 64, "n_time_features": 32},
    },
    "search_space": {"optim.lr_network": {"type": "float", "low": 1e-3, "high": 1.001e-3}},
    "objective": {"metric": "elbo", "direction": "maximize"},
    "concurrency": 2,
    "resources": {"cpus": 1},
}


def in_process_seconds(spec: Any, params: dict[str, Any]) -> float:
    """Wall time of one trial's train/evaluate loop without Ray, on one thread."""
    torch.set_num_threads(1)
    trainer = Trainer(spec.trainer_config(params))
    start = time.perf_counter()
    while trainer.iteration < spec.budget.iterations:
        trainer.train(spec.budget.eval_interval)
        trainer.evaluate()
    return time.perf_counter() - start


def study_timing(spec: Any, root: Path) -> tuple[float, float, list[Any]]:
    """(wall seconds, start-up seconds until the first trial began, results) of a study."""
    start_wall = time.time()
    results = run_study(spec, "", root=root, num_cpus=2, verbose=0)
    wall = time.time() - start_wall
    first_start = min(
        r.metrics_dataframe["timestamp"].iloc[0] - r.metrics_dataframe["time_this_iter_s"].iloc[0]
        for r in results
    )
    return wall, first_start - start_wall, results


def parallel_efficiency(root: Path, quick: bool) -> None:
    iterations = 60 if quick else 200
    spec = parse_spec(
        STUDY
        | {"budget": {"trials": 8, "iterations": iterations, "eval_interval": iterations // 2}}
    )
    single = in_process_seconds(spec, {"optim.lr_network": 1e-3})
    wall, startup, _ = study_timing(spec, root / "efficiency")
    ideal = 8 * single / 2
    print("1. parallel efficiency, 8 trials on 2 CPU workers")
    print(
        f"   one trial in-process (1 thread): {single:.2f} s; ideal wall for 8 on 2: {ideal:.2f} s"
    )
    print(f"   measured wall: {wall:.2f} s, of which fixed start-up {startup:.2f} s")
    print(
        f"   efficiency ideal / (wall - start-up): {ideal / (wall - startup):.2f}  (goal >= 0.85)"
    )
    print(f"   efficiency including start-up:        {ideal / wall:.2f}")


def evaluation_overhead(root: Path, quick: bool) -> None:
    n_evals = 10 if quick else 30
    study = STUDY | {
        "name": "bench-overhead",
        "budget": {"trials": 1, "iterations": n_evals * 2, "eval_interval": 2},
        "concurrency": 1,
    }
    spec = parse_spec(study)
    single = in_process_seconds(spec, {"optim.lr_network": 1e-3})
    _, _, results = study_timing(spec, root / "overhead")
    frame = results[0].metrics_dataframe
    in_trial = (
        frame["timestamp"].iloc[-1] - frame["timestamp"].iloc[0] + frame["time_this_iter_s"].iloc[0]
    )
    per_eval = (in_trial - single) / n_evals
    print("2. overhead per reported evaluation")
    print(f"   {n_evals} evaluations: in Tune {in_trial:.2f} s, in-process {single:.2f} s")
    print(f"   overhead per evaluation: {per_eval:.3f} s  (goal < 0.3 s)")


def imr_speedup(quick: bool) -> None:
    """Per-component MALA work items in-process one after another vs as Ray tasks on 2 CPUs:
    chains from the components (funnel d = 10) and over the support with burn-in and ascent
    (gmm40 d = 50)."""
    chains, steps = (256, 200) if quick else (512, 400)
    cases = {
        "component starts, funnel d=10": (
            targets.make("funnel", dim=10),
            IMRConfig(mala=MalaConfig(n_chains=chains, n_steps=steps, step_size=0.05)),
        ),
        "support starts, gmm40 d=50": (
            targets.make("gmm40", dim=50),
            IMRConfig(
                chain_starts="support",
                mala=MalaConfig(
                    n_chains=chains,
                    n_steps=steps // 2,
                    per_chain=True,
                    burn_in_steps=steps // 4,
                    burn_in_step_size=0.5,
                    ascent_steps=steps // 4,
                ),
            ),
        ),
    }
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    executor = RayTaskExecutor(num_cpus=1)
    print("3. IMR: 4 per-component MALA work items")
    for label, (target, config) in cases.items():
        dim = target.dim
        prior = GaussianMixturePrior(k_max=5, dim=dim, k_init=4, init_std=1.0, init_mean_std=3.0)
        propose_component(prior, target, config, executor, seed=0, init_std=1.0)  # warm up
        start = time.perf_counter()
        propose_component(prior, target, config, map, seed=1, init_std=1.0)
        serial = time.perf_counter() - start
        start = time.perf_counter()
        propose_component(prior, target, config, executor, seed=1, init_std=1.0)
        parallel = time.perf_counter() - start
        print(
            f"   {label}: one after another in-process {serial:.2f} s; as Ray tasks on 2 CPUs "
            f"{parallel:.2f} s; speedup {serial / parallel:.2f}x  (goal >= 1.7x)"
        )
    ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller workloads")
    parser.add_argument("--imr-only", action="store_true", help="only part 3, IMR's tasks")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    if not args.imr_only:
        with tempfile.TemporaryDirectory() as tmp:
            parallel_efficiency(Path(tmp), args.quick)
            evaluation_overhead(Path(tmp), args.quick)
    imr_speedup(args.quick)


if __name__ == "__main__":
    main()
