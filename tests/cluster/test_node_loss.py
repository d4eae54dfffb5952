"""Lost nodes of a real multi-node Ray cluster on one machine, mid-study.

`ray_cluster` runs a head without CPUs and two worker nodes of 1 CPU each, every one a `ray start`
of its own; a study runs with `gmp study run --address` and a node is lost by `kill -9` of all
its processes (raylet, workers, and on the head the GCS and dashboard). Trials and IMR's MALA
tasks are found on their nodes through their processes while they run. Each test prints what
the fault cost (the numbers of docs/cluster.md's table)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from orchestrator.driver import StudyLocations
from orchestrator.recovery import HEAD_LOST_AFTER_S, HEAD_PROBE_S, ORPHAN_ATTR, TUNE_ID_ATTR
from orchestrator.spec import load_spec
from storage.optuna_storage import load_study
from storage.runs import TRIAL_TAG
from tests.cluster.conftest import RayCluster
from tests.e2e.conftest import (
    FAST,
    SMALL_STUDY,
    checkpoint_registered,
    metric_steps,
    reported_results,
    study_file,
    trial_runs,
)

pytestmark = pytest.mark.slow
GMP = [sys.executable, "-m", "orchestrator.cli"]
DEADLINE_S = 300
# Ray names a worker process after the task or actor it runs: the trainer's actor is named
# after Tune's resource wrapper while it trains, after the trainable otherwise.
MALA_TASK_TITLES = (b"ray::_run_in_task",)
TRAINER_TITLES = (b"ray::ResourceTrainable", b"ray::GMPTrainable")


class Study:
    """A study file driven by `gmp study run --address` on `cluster`, and what it recorded."""

    def __init__(self, folder: Path, name: str, **changes: Any) -> None:
        self.name = name
        self.file = study_file(folder, name=name, **changes)
        self.runs_root = folder / "runs"
        self.where = StudyLocations.resolve(load_spec(self.file), self.runs_root)
        self.node_of_pid: dict[int, str] = {}  # seen while the process ran
        self.drivers: list[subprocess.Popen] = []

    def run(self, cluster: RayCluster) -> subprocess.Popen:
        """Start the study's driver on `cluster` (output captured)."""
        assert cluster.head is not None
        command = [*GMP, "study", "run", str(self.file), "--root", str(self.runs_root)]
        self.drivers.append(
            subprocess.Popen(
                [*command, "--address", cluster.head.gcs_address],
                env=cluster.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
        return self.drivers[-1]

    def stop(self) -> None:
        """Kill the drivers still running (a test that failed midway)."""
        for driver in self.drivers:
            if driver.poll() is None:
                driver.kill()
                driver.communicate()

    def results(self, cluster: RayCluster) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
        """Tune's results so far; the node of every reporting process is noted while it runs."""
        found = reported_results(self.runs_root / "tune" / self.name)
        for _, rows in found.values():
            pid = rows[-1]["pid"]
            if pid not in self.node_of_pid and (node := cluster.node_of(pid)):
                self.node_of_pid[pid] = node
        return found

    def finish(self, driver: subprocess.Popen) -> str:
        """Wait for the driver; its output; the study must have succeeded."""
        output = driver.communicate(timeout=DEADLINE_S)[0]
        assert driver.returncode == 0, output[-3000:]
        return output

    def check_nothing_lost(self, trials: int, iterations: int) -> None:
        """Every trial COMPLETE (none RUNNING, none reaped), one MLflow run per trial, FINISHED,
        with every evaluation's metrics recorded exactly once."""
        study = load_study(self.where.optuna_url, self.name)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * trials
        assert not [t for t in study.trials if ORPHAN_ATTR in t.user_attrs]
        runs = trial_runs(self.where, self.name)
        assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(
            t.user_attrs[TUNE_ID_ATTR] for t in study.trials
        )
        every = list(range(10, iterations + 1, 10))
        for run in runs:
            assert run.info.status == "FINISHED"
            assert metric_steps(self.where, run.info.run_id, "elbo") == every

    def redone(self) -> int:
        """Evaluations reported more than once (Tune's results), over every trial."""
        return sum(
            len(rows) - len({r["training_iteration"] for r in rows})
            for _, rows in reported_results(self.runs_root / "tune" / self.name).values()
        )


@pytest.fixture
def new_study(tmp_path: Path) -> Iterator[Callable[..., Study]]:
    """`new_study(name, **changes)`: a Study in this test's folder; its drivers do not outlive
    the test."""
    studies: list[Study] = []

    def make(name: str, **changes: Any) -> Study:
        studies.append(Study(tmp_path, name, **changes))
        return studies[-1]

    yield make
    for study in studies:
        study.stop()


def wait_for(ready: Callable[[], Any], driver: subprocess.Popen, what: str) -> Any:
    """Poll `ready` until it returns something true; fail if the driver ends first."""
    deadline = time.monotonic() + DEADLINE_S
    while not (found := ready()):
        if driver.poll() is not None or time.monotonic() > deadline:
            output = driver.communicate()[0] if driver.poll() is not None else ""
            pytest.fail(f"{what}: not seen (driver exit {driver.poll()})\n{output[-3000:]}")
        time.sleep(0.05)
    return found


def titled(cluster: RayCluster, titles: tuple[bytes, ...]) -> dict[int, str]:
    """The processes of `cluster` whose command line starts with one of `titles`, and their
    nodes."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if not (entry / "cmdline").read_bytes().startswith(titles):
                    continue
            except OSError:  # ended meanwhile
                continue
            node = cluster.node_of(int(entry.name))
            if node is not None:
                found[int(entry.name)] = node
    return found


# What a resumed trial reports when Tune's snapshot names a checkpoint that was rotated out: the
# driver goes on for a few seconds after the head is gone, saving checkpoints and deleting older
# ones, so the snapshot must follow them closely (orchestrator/driver.py, SNAPSHOT_PERIOD_S).
MISSING_CHECKPOINT = "Could not recover from checkpoint as it does not exist on storage anymore"

# One trial holds a whole worker node (1 CPU): two run at once, one per worker.
WHOLE_NODE_TRIALS = {**FAST, "resources": {"cpus": 1}, "concurrency": 2}
# A trial is lost with at least three of its ten evaluations to go: what the test reads of its
# results lags its training, and a trial that ends before its node is lost is not a lost one.
LAST_KILL_AT = 7


def test_a_lost_worker_node_restarts_its_trial_on_the_other_node_from_its_checkpoint(
    ray_cluster: RayCluster, new_study: Callable[..., Study]
) -> None:
    study = new_study(
        "lost-worker", **WHOLE_NODE_TRIALS,
        budget={"trials": 4, "iterations": 100, "eval_interval": 10},
    )  # fmt: skip
    driver = study.run(ray_cluster)

    def checkpointed_trial() -> tuple[str, dict[str, Any]] | None:
        for trial_id, (folder, rows) in study.results(ray_cluster).items():
            last = rows[-1]
            if (
                last["training_iteration"] <= LAST_KILL_AT
                and not last["done"]
                and last["pid"] in study.node_of_pid
                and checkpoint_registered(folder, last["training_iteration"] - 1)
            ):
                return trial_id, last
        return None

    trial_id, last = wait_for(checkpointed_trial, driver, "a trial with a checkpoint")
    lost = study.node_of_pid[last["pid"]]
    ray_cluster.nodes[lost].kill()
    killed_at = time.monotonic()
    # The node comes back at once (a replaced machine). The lost trial resumes on whichever node
    # is free first: the other one once its trial ends, or the one that came back.
    ray_cluster.start_worker(lost)

    def resumed() -> dict[str, Any] | None:
        rows = study.results(ray_cluster).get(trial_id, (None, [last]))[1]
        return rows[-1] if rows[-1]["pid"] != last["pid"] else None

    first = wait_for(resumed, driver, f"trial {trial_id} resumed after node {lost} was lost")
    lost_s = time.monotonic() - killed_at - first["time_this_iter_s"]

    def on_restarted_node() -> bool:
        if (node := ray_cluster.nodes[lost]).process.poll() is not None:
            pytest.fail(f"node {lost} did not start again:\n{node.log_file.read_text()[-3000:]}")
        study.results(ray_cluster)
        return lost in titled(ray_cluster, TRAINER_TITLES).values()

    wait_for(on_restarted_node, driver, f"a trial on node {lost} once it runs again")
    reused_s = time.monotonic() - killed_at
    study.finish(driver)

    rows = study.results(ray_cluster)[trial_id][1]
    before = [r for r in rows if r["pid"] == last["pid"]]
    resumed_on = study.node_of_pid[first["pid"]]
    # From its last checkpoint: the one registered when the test saw `last`, or a later one
    # (the kill may come after more evaluations than the test saw); at most the evaluation
    # whose checkpoint was being registered at the kill is redone.
    restored = first["restored_from_iteration"]
    assert last["iteration"] - 10 <= restored <= before[-1]["iteration"]
    assert [r["iteration"] for r in rows] == [r["iteration"] for r in before] + list(
        range(restored + 10, 101, 10)
    )
    redone = (before[-1]["iteration"] - restored) // 10
    assert redone <= 1
    study.check_nothing_lost(trials=4, iterations=100)
    print(
        f"lost worker node while a trial trained: trial {trial_id} at iteration "
        f"{before[-1]['iteration']} resumed from {restored} on node {resumed_on}, {redone} "
        f"evaluation(s) redone, {lost_s:.1f} s lost (waiting for a free node included); "
        f"node {lost} started again at once, in use {reused_s:.1f} s after the kill"
    )


def test_mala_tasks_on_a_lost_worker_node_are_retried_and_the_trial_goes_on(
    ray_cluster: RayCluster, new_study: Callable[..., Study]
) -> None:
    # The trial's two 1-CPU bundles (trainer, one MALA task) cannot share a 1-CPU node: the
    # trainer runs on one worker, IMR's MALA tasks on the other.
    mala = {"n_chains": 8, "n_steps": 300, "step_size": 0.3}  # about a second per task
    study = new_study(
        "lost-mala",
        fixed={**SMALL_STUDY["fixed"], "prior": {"init_std": 3.0, "k_max": 3},
               "imr": {"enabled": True, "interval": 10, "mala": mala}},
        search_space=FAST["search_space"], search=FAST["search"],
        budget={"trials": 1, "iterations": 30, "eval_interval": 10},
        resources={"cpus": 1, "imr_task_cpus": 1, "imr_parallel_tasks": 1},
    )  # fmt: skip
    driver = study.run(ray_cluster)
    running = wait_for(lambda: titled(ray_cluster, MALA_TASK_TITLES), driver, "a MALA task")
    lost = next(iter(running.values()))
    trainers = titled(ray_cluster, TRAINER_TITLES)
    assert len(trainers) == 1 and lost not in trainers.values(), (running, trainers)
    ray_cluster.nodes[lost].kill()
    killed_at = time.monotonic()
    # Nowhere else has a free CPU: the task's retry waits for the node to come back.
    ray_cluster.start_worker(lost)

    def retried() -> bool:
        return lost in titled(ray_cluster, MALA_TASK_TITLES).values()

    wait_for(retried, driver, f"a MALA task on node {lost} once it runs again")
    retried_s = time.monotonic() - killed_at
    study.finish(driver)

    trial_id, (_, rows) = next(iter(study.results(ray_cluster).items()))
    assert [r["training_iteration"] for r in rows] == [1, 2, 3]
    assert {r["pid"] for r in rows} == set(trainers)  # the trainer never restarted
    assert {r["restored_from_iteration"] for r in rows} == {0}
    # K grows 1 -> 2 -> 3: one task per component per IMR step, each recorded once.
    assert rows[-1]["active_k"] == 3 and rows[-1]["imr_tasks"] == 1 + 2
    first_step_s = rows[0]["time_this_iter_s"]
    lost_s = first_step_s - min(r["time_this_iter_s"] for r in rows[1:])
    study.check_nothing_lost(trials=1, iterations=30)
    assert study.redone() == 0
    print(
        f"lost worker node while MALA tasks ran: the task was retried on the node once it ran "
        f"again ({retried_s:.1f} s after the kill), trial {trial_id} never restarted, "
        f"0 evaluations redone, {lost_s:.1f} s lost"
    )


def test_a_lost_head_stops_the_driver_with_a_message_and_the_study_resumes_on_a_new_head(
    ray_cluster: RayCluster, new_study: Callable[..., Study]
) -> None:
    study = new_study(
        "lost-head", **WHOLE_NODE_TRIALS,
        budget={"trials": 2, "iterations": 400, "eval_interval": 10},
    )  # fmt: skip
    # The workers outlive the head and the driver records their evaluations until it stops
    # (HEAD_LOST_AFTER_S): 400 iterations (about 12 s here) keep the trials training past that.
    # The head goes while both trials have at least half of their 40 evaluations to go: on a
    # loaded machine the second trial's actor can start seconds after the first trial's.
    driver = study.run(ray_cluster)

    def both_checkpointed() -> bool:
        found = study.results(ray_cluster)
        if late := [t for t, (_, r) in found.items() if r[-1]["training_iteration"] > 20]:
            pytest.fail(f"trial(s) {late} too far on before both trials had a checkpoint")
        return len(found) == 2 and all(
            checkpoint_registered(folder, rows[-1]["training_iteration"] - 1)
            for folder, rows in found.values()
        )

    wait_for(both_checkpointed, driver, "both trials with a checkpoint")
    reported = {t: rows[-1]["iteration"] for t, (_, rows) in study.results(ray_cluster).items()}
    assert ray_cluster.nodes is not None
    ray_cluster.nodes["head"].kill()
    killed_at = time.monotonic()
    output = driver.communicate(timeout=DEADLINE_S)[0]
    stopped_s = time.monotonic() - killed_at
    assert driver.returncode == 1, output[-3000:]
    assert "error: lost the Ray cluster's head" in output
    assert f"study {study.name} stops here with its records intact" in output
    assert HEAD_LOST_AFTER_S - HEAD_PROBE_S <= stopped_s < HEAD_LOST_AFTER_S + 30
    stopped_at = {t: rows[-1] for t, (_, rows) in study.results(ray_cluster).items()}
    unfinished = [t for t, last in stopped_at.items() if not last["done"]]
    assert unfinished, f"every trial ended before the driver stopped: {stopped_at}"

    # The head comes back: a new cluster (the old workers cannot join it), the same command.
    for name in ray_cluster.workers:
        ray_cluster.nodes[name].kill()
    ray_cluster.start()
    started_at = time.monotonic()
    study.finish(study.run(ray_cluster))
    resumed_s = time.monotonic() - started_at

    missing = [
        folder.name
        for folder, _ in study.results(ray_cluster).values()
        if MISSING_CHECKPOINT
        in ((folder / "error.txt").read_text() if (folder / "error.txt").is_file() else "")
    ]
    assert not missing, f"trial(s) {missing} lost: Tune's snapshot named a deleted checkpoint"
    rows = {t: r for t, (_, r) in study.results(ray_cluster).items()}
    restored = {t: max(r["restored_from_iteration"] for r in rows[t]) for t in unfinished}
    assert all(restored.values()), restored  # from checkpoints, not from the start
    # From a checkpoint at most a few evaluations older than the last one the driver recorded.
    assert all(restored[t] >= stopped_at[t]["iteration"] - 50 for t in unfinished), restored
    study.check_nothing_lost(trials=2, iterations=400)
    at_stop = sorted(stopped_at[t]["iteration"] for t in unfinished)
    print(
        f"lost head: the driver stopped {stopped_s:.1f} s after it (exit 1), trials seen at "
        f"iterations {sorted(reported.values())} when it was lost and at {at_stop} when the "
        f"driver stopped resumed from {sorted(restored.values())}, "
        f"{study.redone()} evaluation(s) redone, the resumed run took {resumed_s:.0f} s "
        f"(cluster start excluded)"
    )
