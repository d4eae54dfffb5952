"""Killed processes: a trial's actor (kill -9), the driver (kill -9), and two drivers at once.

Every test runs `gmp study run` as a real subprocess on a local Ray and kills real processes;
the pids come from Tune's result.json files (Tune records each result's actor pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from optuna.trial import TrialState

from orchestrator.driver import StudyLocations
from orchestrator.recovery import EXPERIMENT_ATTR, LEASE_PREFIX, ORPHAN_ATTR, TUNE_ID_ATTR
from orchestrator.spec import load_spec
from storage.optuna_storage import load_study
from storage.runs import ERROR_TAG, STATE_TAG, TRIAL_TAG
from tests.e2e.conftest import (
    FAST,
    checkpoint_registered,
    metric_steps,
    reported_results,
    study_file,
    trial_runs,
)

pytestmark = pytest.mark.slow
GMP = [sys.executable, "-m", "orchestrator.cli"]


@dataclass
class Kill:
    """One kill -9 of a trial's actor: what had been reported and checkpointed before it."""

    trial_id: str
    pid: int
    reported_iteration: int
    at: float
    restored_from: int | None = None
    lost_s: float | None = None


def test_a_killed_trial_actor_resumes_from_its_checkpoint_until_max_failures(tmp_path, runs_root):
    name = "e2e-kill-actor"
    file = study_file(
        tmp_path,
        name=name,
        **FAST,
        budget={"trials": 2, "iterations": 150, "eval_interval": 10},
        failures={"max_failures": 1},
    )
    driver = subprocess.Popen(
        [*GMP, "study", "run", str(file), "--root", str(runs_root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    experiment = runs_root / "tune" / name
    wanted: dict[str, int] = {}  # the first trial is killed once, the second twice
    kills: list[Kill] = []
    deadline = time.monotonic() + 400
    while driver.poll() is None and time.monotonic() < deadline:
        for trial_id, (folder, rows) in reported_results(experiment).items():
            wanted.setdefault(trial_id, len(wanted) + 1)
            last, mine = rows[-1], [k for k in kills if k.trial_id == trial_id]
            if mine and mine[-1].restored_from is None and last["pid"] != mine[-1].pid:
                mine[-1].restored_from = last["restored_from_iteration"]
                mine[-1].lost_s = time.monotonic() - mine[-1].at - last["time_this_iter_s"]
            if (
                len(mine) < wanted[trial_id]
                and last["pid"] not in {k.pid for k in kills}
                and last["iterations_since_restore"] >= 2
                and not last["done"]
                and checkpoint_registered(folder, last["training_iteration"] - 1)
            ):
                os.kill(last["pid"], signal.SIGKILL)
                kills.append(Kill(trial_id, last["pid"], last["iteration"], time.monotonic()))
        time.sleep(0.05)
    output = driver.communicate(timeout=120)[0].decode()
    assert driver.returncode == 0, output[-3000:]
    resumed, failed = sorted(wanted, key=wanted.get)
    once = [k for k in kills if k.trial_id == resumed]
    twice = [k for k in kills if k.trial_id == failed]
    assert len(once) == 1 and len(twice) == 2, kills

    where = StudyLocations.resolve(load_spec(file), runs_root)
    states = {
        t.user_attrs[TUNE_ID_ATTR]: t.state for t in load_study(where.optuna_url, name).trials
    }
    assert states == {resumed: TrialState.COMPLETE, failed: TrialState.FAIL}
    runs = {r.data.tags[TRIAL_TAG]: r for r in trial_runs(where, name)}

    # Resumed on a new actor from its last registered checkpoint: that of the last evaluation
    # the test saw, or at most one evaluation earlier (the driver may see an evaluation's
    # result before it has registered its checkpoint). Each evaluation reaches MLflow once.
    rows = reported_results(experiment)[resumed][1]
    first_pid = rows[0]["pid"]
    before = [r["training_iteration"] for r in rows if r["pid"] == first_pid]
    after = [r["training_iteration"] for r in rows if r["pid"] != first_pid]
    assert after == list(range(once[0].restored_from // 10 + 1, 16))
    redone = len(before) - (after[0] - 1)  # evaluations reported by both actors
    assert before == list(range(1, len(before) + 1)) and redone <= 1
    run = runs[resumed]
    assert run.info.status == "FINISHED"
    assert metric_steps(where, run.info.run_id, "elbo") == list(range(10, 151, 10))
    assert run.data.metrics["restored_from_iteration"] == once[0].restored_from
    for kill in [*once, twice[0]]:
        assert kill.restored_from is not None and kill.restored_from >= kill.reported_iteration - 10
        print(
            f"actor kill: trial {kill.trial_id} at iteration {kill.reported_iteration}, resumed "
            f"from {kill.restored_from} ({kill.reported_iteration - kill.restored_from} redone), "
            f"{kill.lost_s:.1f} s lost"
        )

    # Killed once more than max_failures allows: the trial fails and says why.
    run = runs[failed]
    assert run.info.status == "FAILED" and run.data.tags[STATE_TAG] == "ERROR"
    reason = run.data.tags[ERROR_TAG]
    assert "The actor died unexpectedly" in reason and f"pid: {twice[1].pid}" in reason
    assert "[failure 2; max_failures 1]" in reason


def _fast_study_command(
    folder: Path, runs_root: Path, name: str, trials: int, iterations: int, concurrency: int
) -> tuple[list[str], StudyLocations]:
    """The `gmp study run` command of a FAST study, and where it records."""
    budget = {"trials": trials, "iterations": iterations, "eval_interval": 10}
    file = study_file(folder, name=name, **FAST, budget=budget, concurrency=concurrency)
    command = [*GMP, "study", "run", str(file), "--root", str(runs_root)]
    return command, StudyLocations.resolve(load_spec(file), runs_root)


def test_a_killed_driver_resumes_with_no_duplicate_runs_and_no_orphan_trials(tmp_path, runs_root):
    name = "e2e-kill-driver"
    command, where = _fast_study_command(tmp_path, runs_root, name, 4, 100, concurrency=2)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    asked = 0
    while first.poll() is None and time.monotonic() < deadline and asked < 3:
        time.sleep(0.05)
        try:
            asked = len(load_study(where.optuna_url, name).trials)
        except KeyError:
            continue
    # Killed just after Optuna was asked for a third trial: Tune's last experiment snapshot
    # may not know it yet (then it is an orphan for the next run to fail).
    first.kill()
    first.wait()
    assert asked >= 3

    # The dead driver's local Ray processes may still linger while the next run starts.
    start = time.monotonic()
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    second_s = time.monotonic() - start
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]

    study = load_study(where.optuna_url, name)
    trials = study.trials
    reaped = [t for t in trials if ORPHAN_ATTR in t.user_attrs]
    assert [t.number for t in trials if not t.state.is_finished()] == []
    assert all(t.state == TrialState.FAIL for t in reaped)
    complete = {t.user_attrs[TUNE_ID_ATTR] for t in trials if t.state == TrialState.COMPLETE}
    assert len(complete) == 4 and len(trials) == 4 + len(reaped)

    runs = trial_runs(where, name)
    tune_ids = Counter(r.data.tags[TRIAL_TAG] for r in runs)
    assert max(tune_ids.values()) == 1, tune_ids  # one MLflow run per trial, resumed or not
    assert {r.data.tags[TRIAL_TAG] for r in runs if r.info.status == "FINISHED"} == complete
    orphan_ids = {t.user_attrs.get(TUNE_ID_ATTR) for t in reaped}
    for run in runs:
        if run.data.tags[TRIAL_TAG] in orphan_ids:
            assert run.info.status == "KILLED" and run.data.tags[STATE_TAG] == "ORPHANED"
        else:
            assert metric_steps(where, run.info.run_id, "elbo") == list(range(10, 101, 10))
    redone = sum(
        len(rows) - len({r["training_iteration"] for r in rows})
        for _, rows in reported_results(runs_root / "tune" / name).values()
    )
    leases = {k: v for k, v in study.user_attrs.items() if k.startswith(LEASE_PREFIX)}
    assert [v["released"] for v in leases.values()] == [True]
    print(
        f"driver kill: {len(reaped)} orphan trial(s) failed, {redone} evaluation(s) redone "
        f"(Tune's snapshot lag), resumed run took {second_s:.0f} s"
    )


def test_a_second_driver_is_refused_and_a_joining_one_shares_the_budget(tmp_path, runs_root):
    name = "e2e-two-drivers"
    command, where = _fast_study_command(tmp_path, runs_root, name, 6, 150, concurrency=1)
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while first.poll() is None and time.monotonic() < deadline:
        if reported_results(runs_root / "tune" / name):
            break
        time.sleep(0.2)
    assert first.poll() is None, first.communicate()[0].decode()[-3000:]

    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    refused = subprocess.Popen(command, **pipes)
    joined = subprocess.Popen([*command, "--join"], **pipes)
    out, err = refused.communicate(timeout=300)
    assert refused.returncode == 1, out[-2000:] + err[-2000:]
    assert f"study '{name}' is already run by another driver (pid {first.pid} on " in err
    assert "--join" in err
    out, err = joined.communicate(timeout=600)
    assert joined.returncode == 0, out[-2000:] + err[-2000:]
    output = first.communicate(timeout=600)[0].decode()
    assert first.returncode == 0, output[-3000:]

    study = load_study(where.optuna_url, name)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 6
    by_driver = Counter(t.user_attrs[EXPERIMENT_ATTR] for t in study.trials)
    joiners = [e for e in by_driver if e.startswith(f"{name}.join-")]
    assert by_driver[name] >= 1 and len(joiners) == 1, by_driver
    leases = {k: v for k, v in study.user_attrs.items() if k.startswith(LEASE_PREFIX)}
    assert sorted(leases) == sorted(LEASE_PREFIX + e for e in by_driver)
    assert all(lease["released"] for lease in leases.values())
    runs = trial_runs(where, name)
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(
        t.user_attrs[TUNE_ID_ATTR] for t in study.trials
    )
    assert {r.info.status for r in runs} == {"FINISHED"}
    print(f"two drivers: trials per driver {dict(by_driver)}")
