"""The thread policy: thread counts from the CPUs held, the GMP_THREADS override, OpenMP's wait
settings in every gmp process unless the user chose their own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from orchestrator.threads import (
    THREADS_ENV,
    WAIT_POLICY,
    ThreadSettingError,
    openmp_environment,
    thread_count,
)


def test_threads_follow_the_cpus_held(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert thread_count(1.0) == 1
    assert thread_count(0.5) == 1  # a fractional CPU still runs one thread
    assert thread_count(3.0) == 3
    assert thread_count() == 1  # a process that states no CPUs: one, unless GMP_THREADS says more


def test_gmp_threads_overrides_and_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THREADS_ENV, "3")
    assert thread_count(1.0) == thread_count() == 3
    for bad in ("0", "two", "-1", "1.5"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ThreadSettingError, match=THREADS_ENV):
            thread_count(1.0)


def test_openmp_wait_setting_yields_to_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    assert openmp_environment() == {"OMP_WAIT_POLICY": WAIT_POLICY}
    monkeypatch.setenv("GOMP_SPINCOUNT", "1000")
    assert openmp_environment() == {}


def _in_fresh_python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    command, full_env = [sys.executable, "-c", code], {**base, **env}
    result = subprocess.run(command, env=full_env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_importing_gmp_sets_the_wait_setting_before_torch_loads() -> None:
    """The package import sets the wait policy first: libgomp, loaded with torch, reads it then."""
    code = (
        "import sys, os, orchestrator.cli; "
        "print(os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)"
    )
    assert _in_fresh_python(code) == f"{WAIT_POLICY} True"
    assert _in_fresh_python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE True"
