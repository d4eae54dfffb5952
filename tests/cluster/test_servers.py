"""Studies against real servers: a Ray job on a Ray head, PostgreSQL, `mlflow server`.

A study submitted with `gmp study submit --follow` runs eight trials at once on the head with
Optuna on PostgreSQL and MLflow behind `mlflow server`; the same eight concurrent trials run
against the local SQLite default. Both must record every metric exactly once per step, show no
lock errors, and (for the cluster) never reveal the database password.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.job_submission import JobSubmissionClient

from orchestrator.driver import MLFLOW_URI_ENV, OPTUNA_URL_ENV, StudyLocations
from storage.optuna_storage import load_study
from storage.runs import ERROR_TAG, ROLE_TAG, TRIAL_TAG
from tests.cluster.conftest import Postgres, RayHead
from tests.conftest import records_root
from tests.e2e.conftest import FAST, study_file

pytestmark = pytest.mark.slow
GMP = [sys.executable, "-m", "orchestrator.cli"]
CLIENT_ONLY_UNSET = {OPTUNA_URL_ENV, MLFLOW_URI_ENV, "RAY_ADDRESS"}
LOCK_ERRORS = re.compile(
    r"database is locked|deadlock detected|could not obtain lock|LockNotAvailable|"
    r"could not serialize access",
    re.IGNORECASE,
)
EVAL_STEPS = [5, 10]
# Eight quick trials at once, each a quarter of one of the head's two CPUs.
CONCURRENT = {
    **FAST,
    "budget": {"trials": 8, "iterations": 10, "eval_interval": 5},
    "concurrency": 8,
    "resources": {"cpus": 0.25},
}


@dataclass(frozen=True)
class MetricCounts:
    """Metric points of a study's trial runs: stored, (run, key, step) stored twice, runs."""

    points: int
    duplicates: int
    runs: int
    steps: dict[str, list[int]]


def metric_counts(client: MlflowClient, study: str) -> MetricCounts:
    """Every metric history of every trial run of `study`, counted."""
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'trial'"
    )
    points = duplicates = 0
    steps: dict[str, list[int]] = {}
    for run in runs:
        assert ERROR_TAG not in run.data.tags, run.data.tags[ERROR_TAG]
        for key in run.data.metrics:
            history = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            points += len(history)
            duplicates += sum(n - 1 for n in Counter(history).values())
            steps[f"{run.data.tags[TRIAL_TAG]}/{key}"] = sorted(history)
    return MetricCounts(points, duplicates, len(runs), steps)


def assert_recorded_once(client: MlflowClient, optuna_url: str, study: str) -> MetricCounts:
    """Eight complete Optuna trials, eight MLflow runs, each metric once at every evaluation."""
    trials = load_study(optuna_url, study).trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 8
    counts = metric_counts(client, study)
    print(f"{study}: {counts.runs} runs, {counts.points} metric points, "
          f"{counts.duplicates} duplicates")  # fmt: skip
    assert counts.runs == 8 and counts.duplicates == 0
    assert {tuple(s) for s in counts.steps.values()} == {tuple(EVAL_STEPS)}
    assert {k.split("/")[1] for k in counts.steps} >= {"elbo", "log_z", "ess", "sinkhorn", "emc"}
    return counts


def gmp(*args: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the `gmp` CLI in a fresh process with `env` (no storage URLs unless given)."""
    base = {k: v for k, v in os.environ.items() if k not in CLIENT_ONLY_UNSET}
    return subprocess.run(
        [*GMP, *args], capture_output=True, text=True, timeout=timeout,
        env={**base, "COLUMNS": "200", **env},
    )  # fmt: skip


def test_submitted_study_runs_eight_trials_on_postgres_and_mlflow_server(
    tmp_path: Path, postgres: Postgres, mlflow_server: str, ray_head: RayHead
):
    file = study_file(tmp_path, name="cluster-pg", **CONCURRENT)
    root = tmp_path / "head-runs"
    without_token = gmp(
        "study", "submit", str(file), "--address", ray_head.dashboard,
        env={"RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert without_token.returncode == 1, without_token.stderr
    assert "Traceback" not in without_token.stderr, without_token.stderr[-3000:]
    assert "auth" in without_token.stderr.lower(), without_token.stderr
    done = gmp(
        "study", "submit", str(file), "--address", ray_head.dashboard, "--follow",
        "--root", str(root), env=ray_head.client_env,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    job_id = re.search(r"as Ray job (\S+)", done.stdout).group(1)
    assert f"job {job_id}: SUCCEEDED" in done.stdout

    jobs = JobSubmissionClient(ray_head.dashboard, headers=ray_head.headers)
    job = jobs.get_job_info(job_id)
    log = jobs.get_job_logs(job_id)
    assert "study cluster-pg: 8 trials\n" in log  # the end names failures only if there were
    assert not LOCK_ERRORS.search(log), LOCK_ERRORS.search(log)
    assert (root / "tune" / "cluster-pg").is_dir()  # the driver ran on the head, under --root

    client = MlflowClient(mlflow_server)
    assert_recorded_once(client, postgres.url("optuna"), "cluster-pg")

    # The password reached the driver only through the head's environment: it is in none of
    # the job's fields, its log, the CLI's output, MLflow's params and tags, the study file, or
    # any file the driver wrote (Tune pickles its search algorithm and callbacks in tuner.pkl).
    assert postgres.password not in output + log + job.model_dump_json()
    written = [f for f in root.rglob("*") if f.is_file()]
    assert any(f.name == "tuner.pkl" for f in written)
    assert [f for f in written if postgres.password.encode() in f.read_bytes()] == []
    experiment = client.get_experiment_by_name("cluster-pg")
    for run in client.search_runs([experiment.experiment_id]):
        assert postgres.password not in str(run.data.params) + str(run.data.tags)
    parent = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'study'"
    )[0]
    study_yaml = Path(client.download_artifacts(parent.info.run_id, "study.yaml", str(tmp_path)))
    assert study_yaml.read_text() == file.read_text()

    # Any machine with the storage URLs in its environment reads the study's status.
    status = gmp(
        "study", "status", "cluster-pg",
        env={OPTUNA_URL_ENV: postgres.url("optuna"), MLFLOW_URI_ENV: mlflow_server},
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "study cluster-pg: 8/8 trials" in status.stdout
    finished = [line for line in status.stdout.splitlines() if re.search(r" done +2/2 ", line)]
    assert len(finished) == 8, status.stdout  # state "done", both evaluations of 2
    assert postgres.password not in status.stdout + status.stderr


def test_eight_concurrent_trials_on_the_local_sqlite_default(
    tmp_path: Path, ray_head: RayHead, mlflow_store_template: Path
):
    file = study_file(tmp_path, name="cluster-sqlite", **CONCURRENT)
    root = records_root(tmp_path, mlflow_store_template)
    done = gmp(
        "study", "run", str(file), "--address", ray_head.gcs_address, "--root", str(root),
        env=ray_head.client_env,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "study cluster-sqlite: 8 trials\n" in done.stdout  # and no "N failed"
    assert not LOCK_ERRORS.search(output), LOCK_ERRORS.search(output)
    where = StudyLocations.named("cluster-sqlite", root)
    assert where.optuna_url.startswith("sqlite:///") and where.mlflow_uri.startswith("sqlite:///")
    assert_recorded_once(MlflowClient(where.mlflow_uri), where.optuna_url, "cluster-sqlite")
