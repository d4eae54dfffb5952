"""Seconds per DIS-GMP training iteration and peak memory, one fresh process per configuration.

    python -m bench.dis_step                     # funnel, credit, lgcp x K in {1, 10}
    python -m bench.dis_step --quick             # smoke run: N = 16, a quarter of the batch
    python -m bench.dis_step --targets funnel gmm40 --compile --threads 1
    python -m bench.dis_step --targets lgcp --policy   # as gmp train runs it

Peak memory is the growth of the process's maximum resident set size (getrusage) over the
training iterations (warm-up included) on the CPU, torch.cuda.max_memory_allocated on CUDA.
"cpu s" is the process's CPU time per iteration (threads added up): a check on contention from
other work on the machine. The JAX column is the authors' implementation measured on this
machine class (PAPER.md §7); ratio = ours / JAX. bench/dis_vs_jax.py measures the JAX step
beside ours in the same run instead (a quoted anchor cannot see this machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Paper settings (PAPER.md §4) per target: registry kwargs, batch size, initial dt.
SETTINGS = {
    "funnel": ({"dim": 10}, 2000, 0.01),
    "credit": ({}, 1000, 0.01),
    "lgcp": ({}, 500, 0.1),
    "gmm40": ({"dim": 2}, 2000, 0.5),
}
# The authors' JAX step on 2 CPU cores, seconds per iteration, learned Gaussian (PAPER.md §7):
# (without, with) the target score fed to the network.
JAX_SECONDS = {"funnel": (1.28, 1.45), "credit": (0.88, None), "gmm40": (1.31, None)}


def limit_threads(threads: int) -> None:
    """Confine this process to `threads` CPUs when that is fewer than it may use.

    Thread-pool settings differ between libraries (torch, XLA); CPU affinity bounds them all the
    same way, so that two implementations compared at "1 thread" really use one core each.
    """
    allowed = sorted(os.sched_getaffinity(0))
    if threads < len(allowed):
        os.sched_setaffinity(0, allowed[:threads])


def run_one(spec: dict) -> dict:
    """Build a trainer for `spec`, time `iters` iterations after `warmup`; a result row.

    `spec["threads"]` None takes gmp train's thread policy (orchestrator/threads.py: row-block
    threads as the machine leaves CPUs free, judged over the warm-up); otherwise torch runs that
    many intra-op threads and the trainer `spec["row_threads"]` (default 1) row-block threads.
    `spec["pin"]` (default true) also confines the process to `threads` CPUs (`limit_threads`).
    """
    from orchestrator.threads import AdaptiveThreads, single_threaded_torch, use_threads

    if spec["threads"] is not None and spec.get("pin", True):
        limit_threads(spec["threads"])
    import torch

    from trainers import Trainer, TrainerConfig, native

    adaptive = AdaptiveThreads() if spec["threads"] is None else None
    if adaptive is not None:
        single_threaded_torch()
        row_threads = adaptive.most
    else:
        use_threads(spec["threads"])
        row_threads = spec.get("row_threads", 1)
    kwargs, batch, init_dt = SETTINGS[spec["target"]]
    config = TrainerConfig.model_validate(
        {
            "target": {"name": spec["target"], "kwargs": kwargs},
            "batch_size": max(1, batch // spec["batch_divisor"]),
            "device": spec["device"],
            "compile": spec["compile"],
            "checkpoint_steps": spec["checkpoint_steps"],
            "prior": {"k_max": spec["k"], "k_init": spec["k"], "init_mean_std": 1.0},
            "time": {"n_steps": spec["n_steps"], "init_dt": init_dt},
            "network": {
                "use_target_score": spec["target_score"],
                "activation": spec.get("activation", "gelu"),
            },
        }
    )
    trainer = Trainer(config, threads=row_threads)
    cuda = trainer.device.type == "cuda"
    if adaptive is not None and trainer.sampler.uses_compiled_step(config.batch_size, row_threads):
        native.ops()  # built or loaded before the warm-up that judges the free CPUs
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    warm_start = time.perf_counter()
    trainer.train(spec["warmup"])
    warmup_s = time.perf_counter() - warm_start
    if adaptive is not None:
        trainer.threads = adaptive.next()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    seconds, cpu_seconds = [], []
    for _ in range(spec["iters"]):
        start, cpu_start = time.perf_counter(), time.process_time()
        trainer.train(1)
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    return {
        **spec,
        "batch": config.batch_size,
        "dim": trainer.target.dim,
        "s_per_iter": statistics.median(seconds),
        "s_min": min(seconds),
        "cpu_s_per_iter": statistics.median(cpu_seconds),
        "warmup_s": warmup_s,
        "peak_mb": peak_mb,
        "device_name": str(trainer.device),
        "threads_used": max(torch.get_num_threads(), trainer.threads),
        "row_threads": trainer.threads,
        "torch_threads": torch.get_num_threads(),
    }


def run_isolated(spec: dict, module: str = "bench.dis_step") -> dict:
    """`python -m module --one spec` (default: `run_one(spec)`) in a fresh interpreter, from the
    repository root; its result row.

    Each configuration gets its own process so that memory peaks and thread pools do not mix;
    `spec["env"]`, if given, is added to its environment.
    """
    env = {**os.environ, **spec.get("env", {})}
    proc = subprocess.run(
        [sys.executable, "-m", module, "--one", json.dumps(spec)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        return {**spec, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "?"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def jax_anchor(row: dict) -> float | None:
    """The JAX seconds per iteration for this row's setting, where one was measured."""
    if row["n_steps"] != 128 or row["k"] != 1 or row["batch_divisor"] != 1:
        return None
    anchors = JAX_SECONDS.get(row["target"])
    return None if anchors is None else anchors[int(row["target_score"])]


def print_table(rows: list[dict]) -> None:
    """One line per configuration."""
    header = f"{'target':8} {'d':>5} {'K':>3} {'batch':>5} {'N':>4} {'s/iter':>8} {'min':>8}"
    header += f" {'cpu s':>8}"
    print(header + f" {'peak MB':>9} {'JAX s':>6} {'ratio':>6}  notes")
    for row in rows:
        if "error" in row:
            print(f"{row['target']:8} K={row['k']}: failed: {row['error']}")
            continue
        anchor = jax_anchor(row)
        ratio = f"{row['s_per_iter'] / anchor:6.2f}" if anchor else f"{'-':>6}"
        threads = row["threads"]
        if threads is None:
            threads_note = f"gmp train's policy: {row['row_threads']} row-block threads"
        else:
            threads_note = f"threads={threads}"
        notes = [row["device_name"], threads_note]
        notes += [flag for flag in ("compile", "checkpoint_steps") if row[flag]]
        notes += [] if row["target_score"] else ["no target score"]
        print(
            f"{row['target']:8} {row['dim']:5d} {row['k']:3d} {row['batch']:5d} "
            f"{row['n_steps']:4d} {row['s_per_iter']:8.3f} {row['s_min']:8.3f} "
            f"{row['cpu_s_per_iter']:8.3f} "
            f"{row['peak_mb']:9.0f} {anchor or '-':>6} {ratio}  {', '.join(notes)}"
        )


def main() -> None:
    """Parse the command line, run every configuration in its own process, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["funnel", "credit", "lgcp"])
    parser.add_argument("--k", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--policy",
        action="store_true",
        help="gmp train's threads (row blocks, the compiled step) instead of --threads torch's",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile one step")
    parser.add_argument("--checkpoint-steps", action="store_true")
    parser.add_argument("--no-target-score", action="store_true")
    parser.add_argument("--quick", action="store_true", help="N = 16, batch / 4, 2 iterations")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return
    rows = []
    for target in args.targets:
        for k in args.k:
            spec = {
                "target": target,
                "k": k,
                "device": args.device,
                "threads": None if args.policy else args.threads,
                "compile": args.compile,
                "checkpoint_steps": args.checkpoint_steps,
                "target_score": not args.no_target_score,
                "n_steps": 16 if args.quick else 128,
                "batch_divisor": 4 if args.quick else 1,
                "iters": 2 if args.quick else args.iters,
                "warmup": 1 if args.quick else args.warmup,
            }
            rows.append(run_isolated(spec))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
