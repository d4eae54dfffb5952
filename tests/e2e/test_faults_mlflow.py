"""A real `mlflow server` (127.0.0.1, SQLite backend, proxied artifacts): it goes away for a while
mid-study, and it is reached through a URL that carries a password."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from orchestrator.driver import MLFLOW_URI_ENV, StudyLocations
from orchestrator.spec import load_spec
from storage.optuna_storage import load_study
from storage.runs import ROLE_TAG
from tests.e2e.conftest import FAST, study_file

pytestmark = pytest.mark.slow
GMP = [sys.executable, "-m", "orchestrator.cli"]
SECRET = "n0t-a-real-pa55word"


class MlflowServer:
    """`mlflow server` as a subprocess in its own process group, restartable on its port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        """The tracking URI."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 240) -> None:
        """Start the server and wait until it answers /health."""
        options = {
            "--backend-store-uri": f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination": str(self.folder / "artifacts"),
            "--workers": "1",
            "--host": "127.0.0.1",
            "--port": str(self.port),
        }
        command = [sys.executable, "-m", "mlflow", "server", "--serve-artifacts"]
        command += [part for option in options.items() for part in option]
        with (self.folder / "server.log").open("a") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.folder / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise TimeoutError(f"mlflow server did not answer on port {self.port}")

    def kill(self) -> None:
        """kill -9 the server and the workers it started."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One MLflow tracking server for this module's tests."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.kill()


def _trial_runs(client: MlflowClient, name: str) -> list:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")


def test_an_mlflow_outage_mid_study_loses_and_duplicates_no_metric(
    tmp_path, runs_root, mlflow_server
):
    name = "e2e-mlflow-outage"
    file = study_file(
        tmp_path, name=name, **FAST, budget={"trials": 2, "iterations": 200, "eval_interval": 10}
    )
    driver = subprocess.Popen(
        [*GMP, "study", "run", str(file), "--root", str(runs_root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, MLFLOW_URI_ENV: mlflow_server.uri},
    )
    client = MlflowClient(mlflow_server.uri)
    deadline = time.monotonic() + 300
    logged: list[int] = []
    while driver.poll() is None and time.monotonic() < deadline and max(logged, default=0) < 2:
        time.sleep(0.5)
        runs = _trial_runs(client, name)
        logged = [len(client.get_metric_history(r.info.run_id, "elbo")) for r in runs]
    assert driver.poll() is None, driver.communicate()[0].decode()[-3000:]
    assert max(logged) >= 2, logged

    mlflow_server.kill()
    down = time.monotonic()
    time.sleep(5)
    mlflow_server.start()
    outage_s = time.monotonic() - down
    output = driver.communicate(timeout=600)[0].decode()
    assert driver.returncode == 0, output[-3000:]

    where = StudyLocations.resolve(load_spec(file), runs_root)
    trials = load_study(where.optuna_url, name).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    runs = _trial_runs(client, name)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert len(run.data.metrics) > 20
        for key in run.data.metrics:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
            assert steps == list(range(10, 201, 10)), (key, steps)
        artifacts = {f.path for f in client.list_artifacts(run.info.run_id)}
        assert {"checkpoint", "samples", "plots"} <= artifacts
    print(
        f"mlflow outage: {outage_s:.0f} s (kill, 5 s, restart) after {max(logged)} of 20 "
        "evaluations were logged; every metric of both trials logged once per step"
    )


def test_a_password_in_the_tracking_url_appears_in_no_output_record_or_artifact(
    tmp_path, runs_root, mlflow_server
):
    name = "e2e-redact"
    uri = mlflow_server.uri.replace("http://", f"http://gmp:{SECRET}@")
    file = study_file(
        tmp_path,
        name=name,
        **FAST,
        budget={"trials": 1, "iterations": 20, "eval_interval": 10},
        storage={"root": str(runs_root), "mlflow_uri": uri},
    )
    run = subprocess.run(
        [*GMP, "study", "run", str(file)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    status = subprocess.run(
        [*GMP, "study", "status", name, "--root", str(runs_root), "--mlflow-uri", uri],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert status.returncode == 0, status.stderr[-3000:]

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2  # the study and its trial
    study = load_study(StudyLocations.resolve(load_spec(file)).optuna_url, name)
    records = {
        "driver output": run.stdout + run.stderr,
        "status output": status.stdout + status.stderr,
        "MLflow params and tags": json.dumps([[r.data.params, r.data.tags] for r in runs]),
        "Optuna attributes": json.dumps(
            [study.user_attrs, [[t.user_attrs, t.system_attrs] for t in study.trials]],
            default=str,
        ),
    }
    artifacts = mlflow_server.folder / "artifacts"
    for path in artifacts.rglob("*"):  # the server also holds other tests' studies
        if path.is_file():
            records[f"artifact {path.relative_to(artifacts)}"] = path.read_bytes().decode("latin-1")
    for path in (runs_root / "tune").rglob("*"):  # Tune's state, pickles included
        if path.is_file():
            records[f"Tune file {path.name}"] = path.read_bytes().decode("latin-1")
    assert not [where for where, text in records.items() if SECRET in text]
    copies = [
        text
        for where, text in records.items()
        if where.endswith("study.yaml") and f"name: {name}\n" in text
    ]
    assert len(copies) == 1
    assert f"mlflow_uri: http://gmp:***@127.0.0.1:{mlflow_server.port}" in copies[0]
