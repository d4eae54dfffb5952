"""Seconds per DIS training iteration, ours (torch) beside the authors' step in JAX, in one run.

    python -m bench.dis_vs_jax --threads 1          # funnel, credit, gmm40; ours at K = 1 and 10
    python -m bench.dis_vs_jax --quick              # smoke run: N = 16, a quarter of the batch

Needs JAX in the venv (not a gmp dependency): pip install jax==0.10.2 jaxlib==0.10.2.

Every measurement is a fresh process: warm-up iterations (JAX: compilation first), then the median
of `--iters` timed iterations. Rounds interleave the implementations (ours K = 1, JAX, ours K = 10,
..., the order reversed every other round), so that load from other work on the machine falls on
both alike; the table shows the median over rounds of those per-process medians, wall and CPU
time (threads added up). `--threads n` below the number of CPUs confines every process to n CPUs
(affinity) and sets torch's and XLA's thread pools to match. JAX's persistent compilation cache
(a temporary directory) spares later rounds the recompilation; "compile s" is the first
round's. The JAX step is the learned Gaussian (K = 1), so ratios of K > 1 rows are against it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench.dis_step import SETTINGS, run_isolated

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
JAX_TARGETS = ("funnel", "credit", "gmm40")


def run_jax(spec: dict) -> dict:
    """`jax_dis_step.run_one(spec)` in a fresh interpreter; its row, or one with an error."""
    return run_isolated(spec, "bench.jax_dis_step")


def specs(args: argparse.Namespace, target: str, cache_dir: str) -> dict[str, dict]:
    """The runs of one target: ours at every K and the JAX step, keyed by a label."""
    kwargs, batch, init_dt = SETTINGS[target]
    n_steps, divisor = (16, 4) if args.quick else (128, 1)
    common = {
        "target": target,
        "threads": args.threads,
        "target_score": not args.no_target_score,
        "n_steps": n_steps,
        "iters": args.iters,
        "warmup": args.warmup,
    }
    runs = {
        f"ours K={k}": {
            **common,
            "k": k,
            "device": "cpu",
            "compile": args.compile,
            "checkpoint_steps": False,
            "batch_divisor": divisor,
        }
        for k in args.k
    }
    jax_spec = {
        **common,
        "target_kwargs": kwargs,
        "batch": max(1, batch // divisor),
        "init_dt": init_dt,
        "hidden": 128,
        "cache_dir": cache_dir,
    }
    labels = list(runs)
    labels.insert(1, "JAX")
    return {label: jax_spec if label == "JAX" else runs[label] for label in labels}


def summarise(rows: list[dict]) -> dict:
    """Medians over rounds of one implementation's rows (or the first error)."""
    good = [row for row in rows if "error" not in row]
    if not good:
        return {"error": rows[0]["error"]}
    summary = {
        "s_per_iter": statistics.median(row["s_per_iter"] for row in good),
        "cpu_s_per_iter": statistics.median(row["cpu_s_per_iter"] for row in good),
        "rounds": len(good),
        "dim": good[0]["dim"],
        "batch": good[0]["batch"],
    }
    if "compile_s" in good[0]:
        summary["compile_s"] = good[0]["compile_s"]
    return summary


def print_table(args: argparse.Namespace, results: dict[str, dict[str, dict]]) -> None:
    """One line per (target, implementation), with ratios ours / JAX for wall and CPU time."""
    n_steps = 16 if args.quick else 128
    print(
        f"threads={args.threads}, N={n_steps}, target score fed to the network: "
        f"{not args.no_target_score}, ours compiled: {args.compile}, "
        f"rounds={args.rounds}, iters/process={args.iters}"
    )
    print(
        f"{'target':8} {'d':>3} {'batch':>5} {'impl':10} {'s/iter':>8} {'cpu s':>8} "
        f"{'ratio':>6} {'cpu ratio':>9}  notes"
    )
    for target, by_label in results.items():
        jax_row = by_label.get("JAX", {})
        for label, row in by_label.items():
            if "error" in row:
                print(f"{target:8} {label}: failed: {row['error']}")
                continue
            ratio = cpu_ratio = "-"
            if label != "JAX" and "error" not in jax_row and jax_row:
                ratio = f"{row['s_per_iter'] / jax_row['s_per_iter']:.2f}"
                cpu_ratio = f"{row['cpu_s_per_iter'] / jax_row['cpu_s_per_iter']:.2f}"
            note = f"compile {row['compile_s']:.0f} s" if "compile_s" in row else ""
            print(
                f"{target:8} {row['dim']:3d} {row['batch']:5d} {label:10} "
                f"{row['s_per_iter']:8.3f} {row['cpu_s_per_iter']:8.3f} {ratio:>6} "
                f"{cpu_ratio:>9}  {note}"
            )


def main() -> None:
    """Run the rounds, print the side-by-side table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=list(JAX_TARGETS), choices=JAX_TARGETS)
    parser.add_argument("--k", nargs="+", type=int, default=[1, 10], help="our prior's K")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per process")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--compile", action="store_true", help="ours: torch.compile one step")
    parser.add_argument("--no-target-score", action="store_true")
    parser.add_argument("--quick", action="store_true", help="N = 16, batch / 4")
    parser.add_argument("--json", type=Path, help="also write every process's row here")
    args = parser.parse_args()
    raw: dict[str, dict[str, list[dict]]] = {}
    with tempfile.TemporaryDirectory(prefix="jax-cache-") as cache_dir:
        for round_index in range(args.rounds):
            for target in args.targets:
                runs = list(specs(args, target, cache_dir).items())
                if round_index % 2:
                    runs.reverse()
                for label, spec in runs:
                    row = run_jax(spec) if label == "JAX" else run_isolated(spec)
                    row.update(round=round_index, label=label)
                    raw.setdefault(target, {}).setdefault(label, []).append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
    results = {
        target: {label: summarise(rows) for label, rows in by_label.items()}
        for target, by_label in raw.items()
    }
    print_table(args, results)
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
