"""Where one DIS training iteration spends its time, by kind of work, for funnel and credit.

    python -m bench.step_profile                 # 1 thread, the paper's settings, K = 1
    python -m bench.step_profile --threads 2 --k 1 10

torch.profiler's self CPU time per operator, summed into kinds: the network's matrix products,
its GELUs, copies, reductions, other element-wise work, random numbers, and the rest (autograd's
bookkeeping and every operator not named above); "outside operators" is the wall time that no
operator accounts for (Python, the interpreter's dispatch, waiting). With more than one thread
the operators' self CPU time adds up the threads, so shares are of CPU time, not of wall time.

"network alone" times, without the profiler, the same network (its weights and time terms)
applied N times in a bare loop x <- x + dt u(x) with the backward pass of a sum: the work no
change to the integrator, the prior or the target can remove. The step's wall time over it
says how much is left to gain outside the network's matrix products and activations.
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import defaultdict
from typing import NamedTuple

import torch
from torch.profiler import ProfilerActivity, profile

from trainers import Trainer, TrainerConfig

SETTINGS = {"funnel": ({"dim": 10}, 2000, 0.01), "credit": ({}, 1000, 0.01)}  # PAPER.md §4
KINDS = (
    ("matrix products", r"^aten::(mm|addmm|addmv_?|bmm|baddbmm|matmul|linear)$"),
    ("GELU", r"^(aten::gelu(_backward)?|gmp::gelu)$"),  # gmp's: its backward pass is a mul
    ("copies", r"^aten::(copy_|_to_copy|clone|contiguous|cat|stack|index|index_select)$"),
    ("reductions", r"^aten::(sum|mean|logsumexp|amax|max|min|var|norm)$"),
    ("random numbers", r"^aten::(normal_|randn|uniform_|multinomial|randint)$"),
    (
        "element-wise",
        r"^aten::(mul|add|sub|div|pow|neg|exp|log|clamp|where|ge|le|gt|lt|square|sqrt|"
        r"rsqrt|softplus|softplus_backward|log_sigmoid.*|sigmoid|tanh|abs|sign|erf|expm1|log1p|"
        r"mul_|add_|sub_|div_|addcmul_|addcdiv_|lerp_|clamp_|fill_|zero_|zeros_like|masked_fill)$",
    ),
)


class Timings(NamedTuple):
    """Unprofiled wall seconds per iteration: the training step and its network alone."""

    step: float
    network_alone: float


def kind_of(name: str) -> str:
    """The kind of work an operator's name belongs to."""
    for kind, pattern in KINDS:
        if re.match(pattern, name):
            return kind
    return "rest (autograd, other operators)"


def profile_target(target: str, k: int, iters: int) -> tuple[float, Timings, dict[str, float]]:
    """Profiled wall seconds per iteration, the unprofiled step and network alone (seconds per
    iteration), and self CPU seconds per iteration by kind."""
    kwargs, batch, init_dt = SETTINGS[target]
    config = TrainerConfig.model_validate(
        {
            "target": {"name": target, "kwargs": kwargs},
            "batch_size": batch,
            "device": "cpu",
            "prior": {"k_max": k, "k_init": k, "init_mean_std": 1.0},
            "time": {"n_steps": 128, "init_dt": init_dt, "per_dim_friction": True},
            "network": {"use_target_score": False},
            "optim": {"grad_clip_mode": "value", "grad_clip": 1.0},
        }
    )
    trainer = Trainer(config)
    trainer.train(1)
    start = time.perf_counter()
    trainer.train(iters)
    step = (time.perf_counter() - start) / iters
    floor = network_alone(trainer, batch, iters)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        trainer.train(iters)
        wall = (time.perf_counter() - start) / iters
    by_kind: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        by_kind[kind_of(event.key)] += event.self_cpu_time_total / 1e6 / iters
    return wall, Timings(step, floor), dict(by_kind)


def network_alone(trainer: Trainer, batch: int, iters: int) -> float:
    """Wall seconds per iteration of the trainer's network over N steps, forward and backward."""
    sampler = trainer.sampler
    n_steps, dim = sampler.schedule.n_steps, trainer.target.dim

    def run() -> None:
        terms = sampler.step_terms().forward  # the time terms as the step computes them
        x = torch.randn(batch, dim)
        for n in range(n_steps):
            x = x + 0.01 * sampler.network.control(x, terms.row(n), None)
        x.square().sum().backward()

    run()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    trainer.sampler.zero_grad()
    return (time.perf_counter() - start) / iters


def main() -> None:
    """Profile each target and print one table per target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--k", nargs="+", type=int, default=[1])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iters", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads={args.threads}, load average {os.getloadavg()[0]:.2f}")
    for target in args.targets:
        for k in args.k:
            wall, timings, by_kind = profile_target(target, k, args.iters)
            total = sum(by_kind.values())
            print(
                f"\n{target}, K = {k}: step {timings.step:.3f} s/iter, network alone "
                f"{timings.network_alone:.3f} s/iter, step / network alone "
                f"{timings.step / timings.network_alone:.2f} (no profiler)"
            )
            print(f"profiled: {wall:.3f} s/iter wall, {total:.3f} s/iter in operators")
            for kind, seconds in sorted(by_kind.items(), key=lambda item: -item[1]):
                print(f"  {kind:34} {seconds:7.3f} s  {100 * seconds / total:5.1f} %")
            if args.threads == 1:
                outside = max(0.0, wall - total)
                print(f"  {'outside operators':34} {outside:7.3f} s  (of the wall time)")


if __name__ == "__main__":
    main()
