"""gmp train's thread count follows the machine: CPUs that other processes keep busy read as
taken, this process's own work does not, and the count follows what is free."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from orchestrator.threads import THREADS_ENV, AdaptiveThreads, FreeCpus, threads_for

pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/stat") or not hasattr(os, "sched_setaffinity"),
    reason="reads Linux's /proc/stat",
)

_READ_AFTER_SPIN = """
import os, subprocess, sys, time
from orchestrator.threads import FreeCpus
os.sched_setaffinity(0, {int(sys.argv[1])})
free = FreeCpus()
def own():
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
start, cpu_start = time.monotonic(), own()
spin = "while time.monotonic() - start < 1.5: pass"
if sys.argv[2] == "child":  # a child that spins, as a compiler gmp runs would
    subprocess.run([sys.executable, "-c", "import time; start = time.monotonic()\\n" + spin])
elif sys.argv[2] == "spin":
    exec(spin)
else:
    while time.monotonic() - start < 1.5:
        time.sleep(0.05)
share = (own() - cpu_start) / (time.monotonic() - start)
print(free.read(), share)
"""


def _read_pinned(cpu: int, mode: str) -> tuple[float, float]:
    """(free CPUs, own CPU share) of a process pinned to `cpu` that spins, runs a spinning
    child or sleeps for 1.5 s (`mode`: spin, child, sleep)."""
    command = [sys.executable, "-c", _READ_AFTER_SPIN, str(cpu), mode]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=60).stdout
    free, share = (float(value) for value in out.split())
    return free, share


def test_a_cpu_that_another_process_keeps_busy_reads_as_taken() -> None:
    cpu = sorted(os.sched_getaffinity(0))[-1]
    busy = subprocess.Popen(
        [sys.executable, "-c", f"import os; os.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"]
    )
    try:
        time.sleep(0.5)
        free, _ = _read_pinned(cpu, "sleep")
    finally:
        busy.kill()
        busy.wait()
    assert 0.0 <= free < 0.4


@pytest.mark.parametrize("mode", ["spin", "child"])
def test_this_processs_own_work_does_not_count_against_it(mode: str) -> None:
    """Its own threads' work, and that of a child it waited for (the compiled step's build)."""
    cpu = sorted(os.sched_getaffinity(0))[0]
    free, share = _read_pinned(cpu, mode)
    assert share > 0.2  # it did run
    assert free >= share - 0.15  # what it used itself is free to it


def test_thread_count_follows_the_free_cpus() -> None:
    assert threads_for(None, 4) == 4  # unknown: every CPU held
    assert threads_for(2.0, 2) == threads_for(1.8, 2) == 2
    assert threads_for(1.0, 2) == threads_for(0.9, 2) == 1
    assert threads_for(0.0, 2) == 1  # always one
    assert threads_for(7.9, 4) == 4


def test_gmp_threads_fixes_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    threads = AdaptiveThreads()
    assert threads.most == threads.next() == threads.next() == 3
    monkeypatch.delenv(THREADS_ENV)
    adaptive = AdaptiveThreads()
    assert adaptive.most == len(os.sched_getaffinity(0)) == len(FreeCpus().cpus)
    assert 1 <= adaptive.next() <= adaptive.most
