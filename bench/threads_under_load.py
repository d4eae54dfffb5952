"""Seconds per DIS training iteration idle and on a loaded machine: ours at several thread
settings beside the authors' JAX step, in one run; then `gmp train` loaded, default vs 1 thread.

    python -m bench.threads_under_load            # funnel and credit, idle and loaded
    python -m bench.threads_under_load --quick    # smoke run: N = 16, a quarter of the batch

Needs JAX in the venv (not a gmp dependency): pip install jax==0.10.2 jaxlib==0.10.2.

"Loaded" runs `--busy-per-core` busy processes per CPU beside every measurement, each in its
own session, as other users' work would be (Linux groups a session's processes when it shares
the CPUs out, so busy work started from our own terminal would compete with us less fairly than
a neighbour's does). Every measurement is a fresh process: warm-up iterations (JAX: compilation
first), then the median of `--iters` timed iterations; rounds interleave the implementations,
the order reversed every other round, and the table shows the median over rounds. Ours runs
the learned Gaussian (K = 1) with the authors' settings, as the JAX step does. Our variants:

- `policy`: what `gmp train` does by default (orchestrator/threads.py): row-block threads, as
  many as the CPUs other work left free over the warm-up, with the compiled step where there
  is more than one (trainers/native.py; run with GMP_NATIVE=0 to time the Python step);
- `N/rows`: N row-block threads, each running torch single-threaded (a trial holding N CPUs);
- `N`: N torch intra-op threads with libgomp's default wait (idle threads spin 300,000 times,
  then sleep), what torch does outside gmp;
- `N/passive`: N threads with OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once);
- `N/spin=S`: N threads with GOMP_SPINCOUNT=S;
- a `+tanh` suffix (`policy+tanh`): the tanh approximation of GELU, as the authors' network
  (flax) and the JAX step use it, where ours defaults to the exact GELU (see
  docs/study-file.md, `network.activation`).

JAX runs as installed (its own thread pools over every CPU). The last table times
`gmp train` on the quick-start study beside the same load, at the default thread setting and
with GMP_THREADS=1 and 2 (the thread count changes only the last bits of what it prints).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from bench.dis_step import SETTINGS, run_isolated

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("funnel", "credit")
VARIANTS = ("policy", "policy+tanh", "1", "2", "2/rows")
LIBGOMP_DEFAULT_SPIN = "300000"  # what libgomp spins with when no wait setting is given


@contextmanager
def busy_load(per_core: int) -> Iterator[None]:
    """`per_core` busy processes per CPU while the block runs (none for 0)."""
    count = per_core * (os.cpu_count() or 1)
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], start_new_session=True)
        for _ in range(count)
    ]
    try:
        time.sleep(2.0 if procs else 0.0)  # let the scheduler see them
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def variant_spec(variant: str) -> dict:
    """The thread count, environment and activation of one of our variants (see the module
    docstring)."""
    variant, tanh, _ = variant.partition("+tanh")
    activation = {"activation": "gelu_tanh"} if tanh else {}
    return {**_thread_spec(variant), **activation}


def _thread_spec(variant: str) -> dict:
    """The thread count and environment of a variant without its activation suffix."""
    if variant == "policy":
        return {"threads": None, "env": {}}
    threads, _, wait = variant.partition("/")
    if wait == "rows":
        return {"threads": 1, "row_threads": int(threads), "env": {}}
    if wait == "passive":
        env = {"OMP_WAIT_POLICY": "PASSIVE"}
    elif wait.startswith("spin="):
        env = {"GOMP_SPINCOUNT": wait.removeprefix("spin=")}
    else:
        env = {"GOMP_SPINCOUNT": LIBGOMP_DEFAULT_SPIN}
    return {"threads": int(threads), "env": env}


def specs(args: argparse.Namespace, target: str, cache_dir: str) -> dict[str, dict]:
    """Our variants and the JAX step for one target, keyed by a label."""
    kwargs, batch, init_dt = SETTINGS[target]
    n_steps, divisor = (16, 4) if args.quick else (128, 1)
    common = {
        "target": target,
        "target_score": False,
        "n_steps": n_steps,
        "iters": args.iters,
        "warmup": args.warmup,
        "pin": False,
    }
    runs = {
        f"ours {variant}": {
            **common,
            **variant_spec(variant),
            "k": 1,
            "device": "cpu",
            "compile": False,
            "checkpoint_steps": False,
            "batch_divisor": divisor,
        }
        for variant in args.variants
    }
    runs["JAX"] = {
        **common,
        "threads": os.cpu_count(),
        "target_kwargs": kwargs,
        "batch": max(1, batch // divisor),
        "init_dt": init_dt,
        "hidden": 128,
        "cache_dir": cache_dir,
    }
    return runs


def measure(args: argparse.Namespace, per_core: int, cache_dir: str) -> dict[str, dict]:
    """Every target's rows under one load, summarised over rounds; adds the load average."""
    raw: dict[str, dict[str, list[dict]]] = {}
    loads = []
    with busy_load(per_core):
        for round_index in range(args.rounds):
            for target in args.targets:
                runs = list(specs(args, target, cache_dir).items())
                if round_index % 2:
                    runs.reverse()
                for label, spec in runs:
                    module = "bench.jax_dis_step" if label == "JAX" else "bench.dis_step"
                    row = run_isolated(spec, module)
                    loads.append(os.getloadavg()[0])
                    raw.setdefault(target, {}).setdefault(label, []).append(row)
                    print(json.dumps({"load": per_core, **row}), file=sys.stderr, flush=True)
    summary: dict[str, dict] = {}
    for target, by_label in raw.items():
        summary[target] = {}
        for label, rows in by_label.items():
            good = [row for row in rows if "error" not in row]
            summary[target][label] = (
                {
                    "s_per_iter": statistics.median(r["s_per_iter"] for r in good),
                    "cpu_s_per_iter": statistics.median(r["cpu_s_per_iter"] for r in good),
                    "threads": good[0].get("threads_used", good[0]["threads"]),
                }
                if good
                else {"error": rows[0]["error"]}
            )
    return {"targets": summary, "load_average": statistics.median(loads)}


def time_train(args: argparse.Namespace, env: dict[str, str]) -> float:
    """Wall seconds of `gmp train` on the quick-start study with `env` added."""
    out = tempfile.mkdtemp(prefix="gmp-train-bench-")
    command = [
        sys.executable, "-m", "orchestrator.cli", "train", str(ROOT / "examples/quickstart.yaml"),
        "--set", "prior.k_max=10", "--iterations", str(args.train_iterations),
        "--out", str(Path(out) / "model"),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, env={**os.environ, **env}, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it ("unknown" where it does not)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "unknown"
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else "unknown"


def print_steps(args: argparse.Namespace, results: dict[str, dict]) -> None:
    """The step table: per target, load and implementation, s/iter and the ratio to JAX."""
    n_steps = 16 if args.quick else 128
    print(
        f"DIS step, learned Gaussian, no target score, N={n_steps}; {os.cpu_count()} CPUs "
        f"({cpu_model()}, torch's kernels: {torch.backends.cpu.get_cpu_capability()}); "
        f"loaded = {args.busy_per_core} busy process(es) per CPU; rounds={args.rounds}, "
        f"iters/process={args.iters}"
    )
    print(
        f"{'target':7} {'machine':7} {'load avg':>8} {'impl':17} {'threads':>7} {'s/iter':>8} "
        f"{'cpu s':>7} {'vs JAX':>7}"
    )
    for condition, result in results.items():
        for target, by_label in result["targets"].items():
            jax_s = by_label.get("JAX", {}).get("s_per_iter")
            for label, row in by_label.items():
                if "error" in row:
                    print(f"{target:7} {condition:7} {label}: failed: {row['error']}")
                    continue
                ratio = f"{row['s_per_iter'] / jax_s:.2f}" if jax_s and label != "JAX" else "-"
                print(
                    f"{target:7} {condition:7} {result['load_average']:8.1f} {label:17} "
                    f"{row['threads']!s:>7} {row['s_per_iter']:8.3f} "
                    f"{row['cpu_s_per_iter']:7.3f} {ratio:>7}"
                )


def main() -> None:
    """Measure idle, then loaded; print the step table and the `gmp train` table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per process")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--busy-per-core", type=int, default=1)
    parser.add_argument("--train-iterations", type=int, default=100)
    parser.add_argument("--no-train", action="store_true", help="skip the `gmp train` table")
    parser.add_argument("--quick", action="store_true", help="N = 16, batch / 4")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="jax-cache-") as cache_dir:
        results["idle"] = measure(args, 0, cache_dir)
        results["loaded"] = measure(args, args.busy_per_core, cache_dir)
    print_steps(args, results)
    if not args.no_train:
        with busy_load(args.busy_per_core):
            train = {
                "default": time_train(args, {}),
                "GMP_THREADS=1": time_train(args, {"GMP_THREADS": "1"}),
                "GMP_THREADS=2": time_train(args, {"GMP_THREADS": "2"}),
            }
            load_average = os.getloadavg()[0]
        best = min(train.values())
        print(
            f"\ngmp train examples/quickstart.yaml --set prior.k_max=10 --iterations "
            f"{args.train_iterations}, loaded (load avg {load_average:.1f}):"
        )
        for label, seconds in train.items():
            print(f"  {label:15} {seconds:7.1f} s   {seconds / best:5.2f}x the faster")
        results["train"] = train
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
