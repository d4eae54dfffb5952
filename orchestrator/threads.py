"""How many CPU threads a process that trains or runs IMR gives torch, and how its idle
OpenMP threads wait: one policy for `gmp train`, trial actors and IMR's MALA tasks.

torch's CPU kernels run on an OpenMP team that meets at a barrier after every parallel operator;
by default an idle team member spins there for a while before it sleeps. On a busy machine the
scheduler puts a partner aside, the others spin through their time slices, and the step
collapses: beside one busy process per core, funnel's step at 2 spinning threads took 4x its
1-thread time (bench/threads_under_load.py). The policy therefore gives a process as many
threads as the CPUs it holds (a trial its `resources.cpus`, an IMR task its
`resources.imr_task_cpus`, `gmp train` every CPU it may use) and lets idle OpenMP threads
sleep at once (OMP_WAIT_POLICY=PASSIVE): loaded, 2 such threads stayed within 1.3x of one
thread; idle they keep most of what a second core gives. A process with one thread never
waits, so the wait policy costs it nothing. Users override both through the environment:
`GMP_THREADS` (a thread count for every gmp process) and OpenMP's own `OMP_WAIT_POLICY` /
`GOMP_SPINCOUNT`, which the policy never overrides. The thread count can change the last bits
of results (reductions split differently); the wait policy cannot.
"""

from __future__ import annotations

import os

THREADS_ENV = "GMP_THREADS"
WAIT_POLICY = "PASSIVE"  # OMP_WAIT_POLICY: idle OpenMP threads sleep instead of spinning
_OPENMP_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


class ThreadSettingError(ValueError):
    """GMP_THREADS holds something other than a positive whole number."""


def openmp_environment() -> dict[str, str]:
    """The OpenMP wait settings for processes gmp starts (empty where the user chose one)."""
    if any(name in os.environ for name in _OPENMP_WAIT_SETTINGS):
        return {}
    return {"OMP_WAIT_POLICY": WAIT_POLICY}


def prepare_openmp() -> None:
    """Apply `openmp_environment` to this process; effective only before torch is imported."""
    os.environ.update(openmp_environment())


def available_cpus() -> int:
    """How many CPUs this process may run on."""
    return len(os.sched_getaffinity(0))


def thread_count(cpus: float | None = None) -> int:
    """Threads for work that holds `cpus` CPUs (None: every CPU it may use); GMP_THREADS wins."""
    explicit = os.environ.get(THREADS_ENV, "").strip()
    if explicit:
        if not explicit.isdigit() or int(explicit) < 1:
            raise ThreadSettingError(f"{THREADS_ENV}={explicit!r}: expected a whole number >= 1")
        return int(explicit)
    return max(1, int(available_cpus() if cpus is None else cpus))


def use_threads(cpus: float | None = None) -> int:
    """Set torch's intra-op threads by `thread_count(cpus)`; the count set."""
    import torch

    threads = thread_count(cpus)
    torch.set_num_threads(threads)
    return threads
