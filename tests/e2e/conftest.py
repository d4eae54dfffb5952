"""Helpers for end-to-end studies: small study files written into a temporary root, and what
a study recorded (Tune's results, checkpoints, MLflow runs) for fault tests to check."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.driver import CHECKPOINTS_KEPT, StudyLocations
from storage.runs import ROLE_TAG
from tests.conftest import records_root

SMALL_STUDY: dict[str, Any] = {
    "name": "e2e",
    "target": {"name": "gmm40", "kwargs": {"dim": 2, "n_modes": 4, "half_width": 8.0}},
    "sampler": "dis",
    "fixed": {
        "batch_size": 64,
        "eval_samples": 256,
        "time": {"n_steps": 8, "init_dt": 0.3},
        "network": {"hidden": 16, "n_time_features": 8},
        "prior": {"init_std": 3.0},
        "imr": {"interval": 10, "mala": {"n_chains": 8, "n_steps": 20, "step_size": 0.3}},
    },
    "search_space": {
        "prior.k_max": {"type": "categorical", "choices": [1, 3]},
        "imr.enabled": {"type": "categorical", "choices": [False, True]},
        "optim.lr_network": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "objective": {"metric": "elbo", "direction": "maximize"},
    "budget": {"trials": 4, "iterations": 30, "eval_interval": 10},
    "concurrency": 2,
    "resources": {"cpus": 0.5, "imr_task_cpus": 0.5, "imr_parallel_tasks": 1},
    "failures": {"max_failures": 1},
}

# One mixture component and no IMR: an evaluation takes a fraction of a second.
FAST: dict[str, Any] = {
    "fixed": {**SMALL_STUDY["fixed"], "prior": {"init_std": 3.0, "k_max": 1}},
    "search_space": {"optim.lr_network": {"type": "float", "low": 1e-3, "high": 1e-2}},
    "search": {"algorithm": "random"},
}
"""Top-level changes of SMALL_STUDY for studies whose trials must be quick (fault tests)."""


def study_file(folder: Path, **changes: Any) -> Path:
    """Write SMALL_STUDY with top-level `changes` into folder/<name>.yaml."""
    data = copy.deepcopy(SMALL_STUDY)
    data.update(changes)
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def runs_root(tmp_path: Path, mlflow_store_template: Path) -> Path:
    """A records root for one test, its MLflow store created but empty."""
    return records_root(tmp_path, mlflow_store_template)


def reported_results(experiment: Path) -> dict[str, tuple[Path, list[dict[str, Any]]]]:
    """Each trial's reported results so far (trial id -> (trial folder, results))."""
    found = {}
    for file in experiment.glob("*/result.json"):
        rows = []
        for line in file.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the last line is being written
                break
        if rows:
            found[rows[0]["trial_id"]] = (file.parent, rows)
    return found


def checkpoint_registered(folder: Path, index: int) -> bool:
    """Whether the driver has registered the trial's checkpoint `index`, not just seen it written.

    The driver keeps CHECKPOINTS_KEPT checkpoints and deletes the oldest as it registers a new
    one, so checkpoint `index` is registered once `index - CHECKPOINTS_KEPT` is gone."""
    return (
        index >= CHECKPOINTS_KEPT
        and (folder / f"checkpoint_{index:06d}").is_dir()
        and not (folder / f"checkpoint_{index - CHECKPOINTS_KEPT:06d}").exists()
    )


def trial_runs(where: StudyLocations, name: str) -> list:
    """The MLflow runs of study `name`'s trials."""
    client = MlflowClient(where.mlflow_uri)
    experiment = client.get_experiment_by_name(name)
    return client.search_runs([experiment.experiment_id], f"tags.`{ROLE_TAG}` = 'trial'")


def metric_steps(where: StudyLocations, run_id: str, key: str) -> list[int]:
    """The steps at which metric `key` of MLflow run `run_id` was recorded, in order."""
    return [m.step for m in MlflowClient(where.mlflow_uri).get_metric_history(run_id, key)]
