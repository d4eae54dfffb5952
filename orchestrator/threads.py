"""How many CPU threads a gmp process uses, and how they share the machine: one policy for
`gmp train`, trial actors and IMR's MALA tasks.

Training splits every batch into row blocks that threads of our own integrate and differentiate
at once (`Trainer.threads`, `Sampler.rollout`), each running torch single-threaded. Such threads
never wait at OpenMP's barriers (torch's own intra-op threads meet at one after every operator,
and on a busy machine a partner set aside by the scheduler leaves the others spinning through
their time slices: the collapse that README.md's "Threads on a shared machine" describes), so on
a loaded machine they cost little, and on an idle one they use every core
(bench/threads_under_load.py measures both).

- A trial runs one rollout thread per CPU it reserves (`resources.cpus`, default 1): fixed, so a
  resumed trial continues bitwise.
- `gmp train` may use every CPU it can run on, and before each evaluation interval takes as many
  as other processes left free over the last one (`FreeCpus`), at least one.
- An IMR task runs torch's intra-op threads, one per CPU it reserves
  (`resources.imr_task_cpus`); where that is more than one, idle OpenMP threads sleep at once
  (OMP_WAIT_POLICY=PASSIVE), which halved the collapse.

Users override the counts with `GMP_THREADS` (a thread count for every gmp process, fixed) and the
wait with OpenMP's own `OMP_WAIT_POLICY` / `GOMP_SPINCOUNT`, which the policy never overrides.
The thread count can change the last bits of results (sums split differently); the wait cannot.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

THREADS_ENV = "GMP_THREADS"
DEFAULT_CPUS = 1.0  # what a process that states no CPUs holds
WAIT_POLICY = "PASSIVE"  # OMP_WAIT_POLICY: idle OpenMP threads sleep instead of spinning
FREE_MARGIN = 0.3  # a CPU counts as free when other work left at least 1 - FREE_MARGIN of it
_OPENMP_WAIT_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_PROC_STAT = Path("/proc/stat")
_IDLE_FIELDS = (3, 4)  # idle, iowait in a /proc/stat cpu line's counters


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


def explicit_threads() -> int | None:
    """The count GMP_THREADS sets; None where it is unset."""
    explicit = os.environ.get(THREADS_ENV, "").strip()
    if not explicit:
        return None
    if not explicit.isdigit() or int(explicit) < 1:
        raise ThreadSettingError(f"{THREADS_ENV}={explicit!r}: expected a whole number >= 1")
    return int(explicit)


def thread_count(cpus: float = DEFAULT_CPUS) -> int:
    """Threads for work that holds `cpus` CPUs (whole ones, at least one); GMP_THREADS wins."""
    explicit = explicit_threads()
    return explicit if explicit is not None else max(1, int(cpus))


def use_threads(cpus: float = DEFAULT_CPUS) -> int:
    """Set torch's intra-op threads by `thread_count(cpus)` (IMR tasks); the count set."""
    import torch

    threads = thread_count(cpus)
    torch.set_num_threads(threads)
    return threads


def single_threaded_torch() -> None:
    """Run torch's operators on the calling thread alone: each rollout thread of a trainer runs
    single-threaded."""
    import torch

    torch.set_num_threads(1)


def training_threads(cpus: float = DEFAULT_CPUS) -> int:
    """Rollout threads (`Trainer.threads`) for a trainer that holds `cpus` CPUs, with torch made
    single-threaded (`single_threaded_torch`)."""
    single_threaded_torch()
    return thread_count(cpus)


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def _own_cpu_seconds() -> float:
    """CPU time of this process and of the children it has waited for (a compiler it ran)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


class FreeCpus:
    """How many of this process's CPUs other processes left free, between one reading and the
    next: the CPUs' busy time (Linux's /proc/stat, time stolen by a hypervisor included) minus
    this process's own CPU time (its finished children's included), over the wall time. None
    where /proc/stat cannot be read."""

    def __init__(self) -> None:
        self.cpus = usable_cpus()
        self._last = self._sample()

    def _busy_seconds(self) -> float | None:
        try:
            lines = _PROC_STAT.read_text().splitlines()
        except OSError:
            return None
        wanted = {f"cpu{cpu}" for cpu in self.cpus}
        ticks = 0
        for line in lines:
            name, *counters = line.split()
            if name in wanted:
                values = [int(value) for value in counters]
                ticks += sum(values[:8]) - sum(values[i] for i in _IDLE_FIELDS)
        return ticks / os.sysconf("SC_CLK_TCK")

    def _sample(self) -> tuple[float, float, float] | None:
        busy = self._busy_seconds()
        return None if busy is None else (time.monotonic(), busy, _own_cpu_seconds())

    def read(self) -> float | None:
        """Free CPUs (a fraction of them counts) since the last reading or the start."""
        now, last = self._sample(), self._last
        self._last = now
        if now is None or last is None or now[0] <= last[0]:
            return None
        wall = now[0] - last[0]
        others = max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / wall
        return max(0.0, len(self.cpus) - others)


class AdaptiveThreads:
    """`gmp train`'s rollout threads: GMP_THREADS when set, else as many of this process's
    CPUs as other work left free since the last call (`FreeCpus`), at least one."""

    def __init__(self) -> None:
        self.fixed = explicit_threads()
        self.free = FreeCpus()

    @property
    def most(self) -> int:
        """The most threads a call can give."""
        return self.fixed if self.fixed is not None else len(self.free.cpus)

    def next(self) -> int:
        """The thread count for the next stretch of work."""
        if self.fixed is not None:
            return self.fixed
        return threads_for(self.free.read(), self.most)


def threads_for(free: float | None, most: int) -> int:
    """Threads to run beside other work that left `free` CPUs free (None: unknown, take `most`):
    one per CPU at least 1 - FREE_MARGIN free, at least one, at most `most`."""
    if free is None:
        return most
    return max(1, min(most, math.floor(free + FREE_MARGIN)))
