"""The evaluation curve of a run of the authors' public code, in the rows our tables use.

The authors' code (DenisBless/UnderdampedDiffusionBridges, `run.py`) prints one line per
evaluation, `Step S: Loss: L; ELBO e; Δ lnZ z; reverse_ESS r`, on `eval_samples` (2000) samples
every `iters / n_evals` iterations. This reads such a log and prints the ELBO and the ESS at
each milestone and the mean of the last 5 evaluations (the paper's protocol), so the authors'
own run can stand beside ours. A run of theirs at the smaller size used in
docs/results_discussion.md, on one core, with their pinned requirements installed (jaxlib for
the CPU in place of the CUDA build):

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    python run.py algorithm=dis target=funnel common.batch_size=500 common.num_steps=64 \
        algorithm.model.num_hid=64 common.iters=10000 n_evals=100 use_wandb=False \
        visualize_samples=False save_samples=False "discrepancies=[]" compute_emc=False \
        seed=0 > funnel.log

and the same with `target=credit common.iters=3000 n_evals=30 > credit.log`. Their credit target
loads reference samples (`targets/data/german_credit10k.npy`, not in their repository) that only
the sample discrepancies use; with those off, an array of zeros of shape (10000, 25) in its
place lets the run start unchanged.

Usage: python -m experiments.authors_code LOG [LOG ...] [--every 1000]
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from storage.records import LAST_EVALUATIONS

EVALUATION = re.compile(
    r"^Step (?P<step>\d+): Loss: [^;]*; ELBO (?P<elbo>\S+); .*reverse_ESS (?P<ess>\S+)\s*$"
)


def evaluations(log: Path) -> list[tuple[int, float, float]]:
    """(iteration, ELBO, ESS) of every evaluation line in `log`, in order."""
    rows = []
    for line in log.read_text(errors="replace").splitlines():
        match = EVALUATION.match(line.strip())
        if match:
            rows.append((int(match["step"]), float(match["elbo"]), float(match["ess"])))
    if not rows:
        raise SystemExit(f"{log}: no evaluation lines ('Step S: Loss: ...; ELBO ...') found")
    return rows


def milestone_row(rows: list[tuple[int, float, float]], every: int) -> list[str]:
    """'ELBO / ESS' at each multiple of `every` the run reached (the last evaluation at or before
    it; the authors' code makes its last at iteration iters - 1)."""
    cells = []
    for milestone in range(every, rows[-1][0] + 2, every):
        before = [row for row in rows if row[0] <= milestone]
        _, elbo, ess = before[-1]
        cells.append(f"{milestone:,}: {elbo:.3f} / {ess:.2f}")
    return cells


def main() -> None:
    """Print each log's curve at the milestones and the mean of its last 5 evaluations."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", type=Path, nargs="+")
    parser.add_argument("--every", type=int, default=1000, help="iterations between milestones")
    args = parser.parse_args()
    for log in args.logs:
        rows = evaluations(log)
        last = rows[-LAST_EVALUATIONS:]
        elbo = statistics.fmean(row[1] for row in last)
        ess = statistics.fmean(row[2] for row in last)
        print(f"{log.name}: {len(rows)} evaluations, last at iteration {rows[-1][0]:,}")
        milestones = milestone_row(rows, args.every)
        if milestones:
            print("  ELBO / ESS at " + "; ".join(milestones))
        print(f"  mean of the last {len(last)}: ELBO {elbo:.3f}, ESS {ess:.3f}")


if __name__ == "__main__":
    main()
