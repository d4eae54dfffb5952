"""A small study end to end on a real local Ray, real Optuna storage and a real MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.driver import StudyLocations, run_study
from orchestrator.spec import load_spec
from orchestrator.status import study_status
from storage.optuna_storage import TUNE_ID_ATTR, load_study
from storage.records import collect
from storage.runs import (
    BEST_RUN_TAG,
    EXPERIMENT_KIND_TAG,
    FAMILY_TAG,
    NOTE_TAG,
    OPTUNA_TAG,
    ROLE_TAG,
    STATE_TAG,
    TRIAL_TAG,
)
from storage.samples import read_samples, sample_summary
from tests.e2e.conftest import study_file

pytestmark = pytest.mark.slow


def _trial_runs(client: MlflowClient, study: str) -> list:
    experiment = client.get_experiment_by_name(study)
    return client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`{ROLE_TAG}` = 'trial'"
    )


def _artifacts(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_study_records_every_trial_once_in_optuna_and_mlflow(tmp_path: Path, runs_root: Path):
    file = study_file(tmp_path)
    spec = load_spec(file)
    results = run_study(spec, file.read_text(), root=runs_root, num_cpus=2, verbose=0)
    assert len(results) == 4 and not [r for r in results if r.error]

    where = StudyLocations.resolve(spec, runs_root)
    study = load_study(where.optuna_url, "e2e")
    assert len(study.trials) == 4
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    tune_ids = {t.user_attrs[TUNE_ID_ATTR] for t in study.trials}
    assert len(tune_ids) == 4

    client = MlflowClient(where.mlflow_uri)
    runs = _trial_runs(client, "e2e")
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(tune_ids)
    numbers = {t.user_attrs[TUNE_ID_ATTR]: t.number for t in study.trials}
    for run in runs:
        tune_id = run.data.tags[TRIAL_TAG]
        assert run.data.tags[OPTUNA_TAG] == str(numbers[tune_id])
        assert run.data.tags[STATE_TAG] == "TERMINATED" and run.info.status == "FINISHED"
        assert run.data.params["prior.k_max"] in {"1", "3"}
        family = "GMP" if run.data.params["prior.k_max"] == "3" else "Gaussian (learned)"
        assert run.data.tags[FAMILY_TAG] == run.data.params["family"] == family
        label = "GMP K=3" if family == "GMP" else family
        assert run.info.run_name.startswith(label + " · lr_network ")
        assert run.info.run_name.endswith(f" · #{numbers[tune_id]}")
        assert run.data.params["time.n_steps"] == "8"
        for metric in ("elbo", "log_z", "delta_log_z", "ess", "sinkhorn", "emc", "active_k"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert steps == [10, 20, 30], (metric, steps)
        files = _artifacts(client, run.info.run_id)
        assert {
            "checkpoint/model.safetensors",
            "checkpoint/config.json",
            "samples/samples.parquet",
            "samples/summary.json",
            "plots/samples.png",
            "plots/training_curves.png",
        } <= files
        folder = Path(client.download_artifacts(run.info.run_id, "samples", str(tmp_path)))
        summary = json.loads((folder / "summary.json").read_text())  # what MLflow previews
        assert summary == sample_summary(*read_samples(folder / "samples.parquet"))
        assert summary["samples"] == sum(summary["per_component"].values()) > 0

    best = study.best_trial
    best_run = next(r for r in runs if r.data.tags[TRIAL_TAG] == best.user_attrs[TUNE_ID_ATTR])
    assert best_run.data.metrics["elbo"] == pytest.approx(best.value, rel=1e-12)

    parent = client.search_runs(
        [client.get_experiment_by_name("e2e").experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = 'study'",
    )
    assert len(parent) == 1
    experiment = client.get_experiment_by_name("e2e")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == "custom_model_development"
    note = parent[0].data.tags[NOTE_TAG]  # the study's answer, where the UI shows it first
    assert f"**Best trial:** {best_run.info.run_name}, ELBO" in note
    assert parent[0].data.tags[BEST_RUN_TAG] == best_run.info.run_id
    rows = [line for line in note.splitlines() if line.startswith("| G")]
    assert [row.split(" | ")[0] for row in rows] == ["| GMP K=3", "| Gaussian (learned)"]
    records = {r.run_id: r for r in collect(client, ["e2e"])}
    best_elbo = records[best_run.info.run_id].final("elbo")
    assert parent[0].data.metrics["best_elbo"] == pytest.approx(best_elbo, rel=1e-12)
    for row in rows:
        family_runs = [r for r in runs if row.startswith("| " + r.info.run_name.split(" · ")[0])]
        assert row.split(" | ")[1] == str(len(family_runs))
    assert {"study.yaml", "study/trials.parquet", "study/optimization_history.png"} <= _artifacts(
        client, parent[0].info.run_id
    )

    status = study_status(where.optuna_url, where.mlflow_uri, "e2e")
    assert status.best is not None and status.best.number == best.number
    assert all(row.evaluations == 3 for row in status.rows)


def test_imr_steps_ran_one_ray_task_per_active_component(tmp_path: Path, runs_root: Path):
    file = study_file(
        tmp_path,
        name="e2e-imr",
        search_space={"optim.lr_network": {"type": "float", "low": 1e-3, "high": 2e-3}},
        fixed={**load_spec(study_file(tmp_path)).fixed, "prior": {"k_max": 3, "init_std": 3.0}}
        | {"imr": {"enabled": True, "interval": 10, "mala": {"n_chains": 8, "n_steps": 20}}},
        budget={"trials": 2, "iterations": 30, "eval_interval": 10},
    )
    spec = load_spec(file)
    run_study(spec, file.read_text(), root=runs_root, num_cpus=2, verbose=0)
    where = StudyLocations.resolve(spec, runs_root)
    client = MlflowClient(where.mlflow_uri)
    for run in _trial_runs(client, "e2e-imr"):
        tasks = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "imr_tasks")}
        active = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "active_k")}
        # IMR at iterations 10 and 20 with 1 and then 2 active components: 1 + 2 Ray tasks.
        assert active == {10: 2, 20: 3, 30: 3}
        assert tasks == {10: 1, 20: 3, 30: 3}
