"""Studies under trouble: failing trials, early stopping, an interrupted driver, bad files."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray import cloudpickle

from orchestrator.cli import main
from orchestrator.driver import StudyLocations, run_study
from orchestrator.spec import load_spec
from orchestrator.status import study_status
from storage.optuna_storage import TUNE_ID_ATTR, load_study
from storage.runs import ERROR_TAG, ROLE_TAG, STATE_TAG, TRIAL_TAG
from tests.e2e.conftest import SMALL_STUDY, study_file

pytestmark = pytest.mark.slow
GMP = [sys.executable, "-m", "orchestrator.cli"]
FIXED_WITHOUT_DT = {**SMALL_STUDY["fixed"], "time": {"n_steps": 8}}


def _runs(where: StudyLocations, name: str) -> list:
    client = MlflowClient(where.mlflow_uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")


def test_a_diverging_trial_fails_with_its_reason_and_the_others_complete(tmp_path, runs_root):
    file = study_file(
        tmp_path,
        name="e2e-fail",
        fixed=FIXED_WITHOUT_DT,
        search_space={"time.init_dt": {"type": "categorical", "choices": [0.3, 1.0e30]}},
        search={"algorithm": "grid"},
        budget={"trials": 2, "iterations": 20, "eval_interval": 10},
        failures={"max_failures": 0},
    )
    spec = load_spec(file)
    results = run_study(spec, file.read_text(), root=runs_root, num_cpus=2, verbose=0)
    assert sorted(r.error is None for r in results) == [False, True]
    where = StudyLocations.resolve(spec, runs_root)
    states = {
        t.params["time.init_dt"]: t.state.name
        for t in load_study(where.optuna_url, "e2e-fail").trials
    }
    assert states == {0.3: "COMPLETE", 1.0e30: "FAIL"}
    runs = {r.data.params["time.init_dt"]: r for r in _runs(where, "e2e-fail")}
    assert runs["1e+30"].info.status == "FAILED" and runs["1e+30"].data.tags[STATE_TAG] == "ERROR"
    assert "TrialFailedError: " in runs["1e+30"].data.tags[ERROR_TAG]
    assert runs["0.3"].info.status == "FINISHED"


def test_scheduler_stops_trials_in_a_bad_region_early(tmp_path, runs_root):
    file = study_file(
        tmp_path,
        name="e2e-asha",
        fixed=FIXED_WITHOUT_DT,
        search_space={
            "time.init_dt": {"type": "categorical", "choices": [0.3, 1.0e-4]},
            "optim.lr_network": {"type": "categorical", "choices": [3e-3, 1e-3]},
        },
        search={"algorithm": "grid"},
        scheduler={"type": "asha", "grace_period": 1, "reduction_factor": 2},
        budget={"trials": 4, "iterations": 40, "eval_interval": 10},
        concurrency=1,
    )
    spec = load_spec(file)
    run_study(spec, file.read_text(), root=runs_root, num_cpus=2, verbose=0)
    where = StudyLocations.resolve(spec, runs_root)
    runs = _runs(where, "e2e-asha")
    evaluations = {r.data.params["time.init_dt"]: [] for r in runs}
    for run in runs:
        evaluations[run.data.params["time.init_dt"]].append(run.data.metrics["training_iteration"])
    # Trials from the bad region (tiny time steps) are stopped; the good ones run to the end.
    assert min(evaluations["0.0001"]) < 4, evaluations
    assert evaluations["0.3"] and max(evaluations["0.3"]) == 4, evaluations
    # Stopped trials are told apart from finished ones: PRUNED in Optuna, STOPPED in MLflow.
    for trial in load_study(where.optuna_url, "e2e-asha").trials:
        run = next(r for r in runs if r.data.tags[TRIAL_TAG] == trial.user_attrs["tune_trial_id"])
        stopped = run.data.metrics["training_iteration"] < 4
        assert trial.state.name == ("PRUNED" if stopped else "COMPLETE"), trial
        assert run.data.tags[STATE_TAG] == ("STOPPED" if stopped else "TERMINATED")
        assert ("gmp_stopped" in trial.user_attrs) == stopped
    status = study_status(where.optuna_url, where.mlflow_uri, "e2e-asha")
    assert "stopped early" in {row.shown_state for row in status.rows}
    assert status.best is not None and status.best.state == "COMPLETE"


def test_interrupted_study_resumes_without_duplicates_and_takes_more_trials(tmp_path, runs_root):
    """A study's life: interrupted, resumed to its end, rerun (complete), given one more trial."""
    budget = {"trials": 4, "iterations": 80, "eval_interval": 10}
    file = study_file(tmp_path, name="e2e-resume", budget=budget)
    command = [*GMP, "study", "run", str(file), "--root", str(runs_root)]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    experiment = runs_root / "tune" / "e2e-resume"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list(experiment.glob("*/checkpoint_000002")):
        time.sleep(0.5)
    assert list(experiment.glob("*/checkpoint_000002")), "no trial checkpointed in time"
    first.send_signal(signal.SIGINT)
    output = first.communicate(timeout=120)[0].decode()
    assert first.returncode == 130, output[-3000:]
    assert output.rstrip().endswith("interrupted; run the same command to resume"), output[-3000:]
    assert "Tuner.restore" not in output and "Traceback" not in output, output[-3000:]
    where = StudyLocations.resolve(load_spec(file), runs_root)
    unfinished = [
        t for t in load_study(where.optuna_url, "e2e-resume").trials if not t.state.is_finished()
    ]
    assert unfinished, output[-3000:]
    assert all(t.user_attrs.get("gmp_interrupted") for t in unfinished if t.params)
    killed = [r for r in _runs(where, "e2e-resume") if r.info.status == "KILLED"]
    assert killed and all(r.data.tags[STATE_TAG] == "INTERRUPTED" for r in killed)
    assert all(r.info.status != "RUNNING" for r in _runs(where, "e2e-resume"))
    status = subprocess.run(
        [*GMP, "study", "status", "e2e-resume", "--root", str(runs_root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert " interrupted " in status.stdout, status.stdout
    _as_begun_without_table(experiment)

    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "study e2e-resume: " in second.stdout, second.stdout[-3000:]
    assert "== Status ==" not in second.stdout, second.stdout[-3000:]
    trials = load_study(where.optuna_url, "e2e-resume").trials
    assert len(trials) == 4 and {t.state.name for t in trials} == {"COMPLETE"}
    assert not any(t.user_attrs.get("gmp_interrupted") for t in trials)
    runs = _runs(where, "e2e-resume")
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(
        t.user_attrs[TUNE_ID_ATTR] for t in trials
    )
    assert {(r.info.status, r.data.tags[STATE_TAG]) for r in runs} == {("FINISHED", "TERMINATED")}
    client = MlflowClient(where.mlflow_uri)
    resumed = 0
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "elbo")]
        assert steps == list(range(10, 81, 10)), steps
        restored = [
            m.value for m in client.get_metric_history(run.info.run_id, "restored_from_iteration")
        ]
        resumed += max(restored) > 0
    assert resumed >= 1
    assert "winner: trial " in second.stdout and "gmp report e2e-resume" in second.stdout

    third = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "study e2e-resume is complete (4 trials)" in third.stdout

    study_file(tmp_path, name="e2e-resume", budget={**budget, "trials": 5})
    more = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    trials = load_study(where.optuna_url, "e2e-resume").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    after = {r.info.run_id: r for r in _runs(where, "e2e-resume")}
    assert len(after) == 5 and {r.info.status for r in after.values()} == {"FINISHED"}
    for run in runs:  # the first four ran no further
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "elbo")]
        assert steps == list(range(10, 81, 10)), steps


def _as_begun_without_table(experiment: Path) -> None:
    """Make the saved experiment look begun by a gmp without the study table (Tune pickles the
    run config, reporter included, when an experiment begins): the resumed run must still
    print the current table, not Tune's default status blocks."""
    saved = experiment / "tuner.pkl"
    state = cloudpickle.loads(saved.read_bytes())
    state["_run_config"].progress_reporter = None
    saved.write_bytes(cloudpickle.dumps(state))  # as Tune writes it


BAD_FILES = {
    "unknown key": {"trails": 3},
    "K below one": {"fixed": {**SMALL_STUDY["fixed"], "prior": {"k_max": 0}}},
    "negative learning rate": {
        "search_space": {"optim.lr_network": {"type": "float", "low": -1.0, "high": 1.0}}
    },
    "empty range": {"search_space": {"time.n_steps": {"type": "int", "low": 9, "high": 9}}},
    "unknown target": {"target": {"name": "nope"}},
    "bad target argument": {"target": {"name": "gmm40", "kwargs": {"dims": 2}}},
    "metric the target lacks": {
        "target": {"name": "funnel"},
        "objective": {"metric": "emc", "direction": "maximize"},
    },
    "unknown metric": {"objective": {"metric": "accuracy", "direction": "maximize"}},
    "wrong type": {"budget": {"trials": "many", "iterations": 10, "eval_interval": 5}},
    "path traversal": {"name": "../../etc"},
    "no setting": {"search_space": {"optim.momentum": {"type": "float", "low": 0.1, "high": 0.2}}},
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_study_file_exits_2_naming_the_field_and_writes_nothing(tmp_path, kind, capsys):
    file = study_file(tmp_path, **BAD_FILES[kind])
    root = tmp_path / "runs"
    root.mkdir()
    assert main(["study", "run", str(file), "--root", str(root)]) == 2
    assert f"{file}: invalid study file" in capsys.readouterr().err
    assert list(root.iterdir()) == []


def test_bad_study_file_exit_code_of_the_command(tmp_path):
    file = study_file(tmp_path, budget={"trials": 0, "iterations": 10, "eval_interval": 5})
    root = tmp_path / "runs"
    root.mkdir()
    result = subprocess.run(
        [*GMP, "study", "run", str(file), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "budget.trials: Input should be greater than or equal to 1" in result.stderr
    assert list(root.iterdir()) == []
