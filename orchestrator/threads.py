"""How many CPU threads a process that trains or runs IMR gives torch, and how its idle
OpenMP threads wait: one policy for `gmp train`, trial actors and IMR's MALA tasks.

torch's CPU kernels run on an OpenMP team that meets at a barrier after every parallel operator;
by default an idle team member spins there for a while before it sleeps. On a busy machine the
scheduler puts a partner aside, the others spin through their time slices, and the step
collapses (README.md, "Threads on a shared machine"; bench/threads_under_load.py). One thread
never waits for a partner, and measured side by side it was the fastest setting loaded and at
most 1.6x slower than two idle. The policy therefore runs one thread per CPU a process holds:
a trial its `resources.cpus` (default 1), an IMR task its `resources.imr_task_cpus`, `gmp
train` one CPU; and where that is more than one thread, idle OpenMP threads sleep at once
(OMP_WAIT_POLICY=PASSIVE), which halved the collapse. Users override both through the
environment: `GMP_THREADS` (a thread count for every gmp process) and OpenMP's own
`OMP_WAIT_POLICY` / `GOMP_SPINCOUNT`, which the policy never overrides. The thread count can
change the last bits of results (reductions split differently); the wait policy cannot.
"""

from __future__ import annotations

import os

THREADS_ENV = "GMP_THREADS"
DEFAULT_CPUS = 1.0  # what a process that states no CPUs (gmp train) holds
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


def thread_count(cpus: float = DEFAULT_CPUS) -> int:
    """Threads for work that holds `cpus` CPUs (whole ones, at least one); GMP_THREADS wins."""
    explicit = os.environ.get(THREADS_ENV, "").strip()
    if explicit:
        if not explicit.isdigit() or int(explicit) < 1:
            raise ThreadSettingError(f"{THREADS_ENV}={explicit!r}: expected a whole number >= 1")
        return int(explicit)
    return max(1, int(cpus))


def use_threads(cpus: float = DEFAULT_CPUS) -> int:
    """Set torch's intra-op threads by `thread_count(cpus)`; the count set."""
    import torch

    threads = thread_count(cpus)
    torch.set_num_threads(threads)
    return threads
