"""A study of a user's target module run as Ray actors: the module lies beside the study file
only (not in the package, not on PYTHONPATH), and the local Ray's workers import it from there."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.driver import StudyLocations
from orchestrator.spec import load_spec
from storage.optuna_storage import load_study
from tests.user_targets import write_module, write_study

pytestmark = pytest.mark.slow


def test_ray_trials_import_a_target_module_from_the_study_files_folder(
    fresh_imports: Path, runs_root: Path, monkeypatch: pytest.MonkeyPatch
):
    folder = fresh_imports / "study"
    folder.mkdir()
    write_module(folder)
    study = write_study(folder, budget={"trials": 1, "iterations": 30, "eval_interval": 15})
    monkeypatch.chdir(runs_root)  # Ray's workers get the driver's folder: not the study's
    assert main(["study", "run", str(study), "--root", str(runs_root)]) == 0

    where = StudyLocations.resolve(load_spec(study), runs_root)
    (trial,) = load_study(where.optuna_url, "user-target").trials
    assert trial.state.name == "COMPLETE"
    assert trial.value < 0.1  # delta_log_z: the trial's estimate against the known log Z
