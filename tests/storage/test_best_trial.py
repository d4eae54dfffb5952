"""The best trial of a study, as export and the study's answer pick it (storage.optuna_storage)."""

from __future__ import annotations

import optuna

from storage.optuna_storage import best_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(directions: list[str], values: list[list[float] | None]) -> optuna.Study:
    """An in-memory study with one trial per entry of `values` (None: a failed trial)."""
    study = optuna.create_study(directions=directions)
    for value in values:
        trial = study.ask()
        if value is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, value if len(directions) > 1 else value[0])
    return study


def test_single_objective_is_optunas_best_trial_in_either_direction():
    assert best_trial(_study(["maximize"], [[1.0], None, [3.0], [2.0]])).number == 2
    assert best_trial(_study(["minimize"], [[1.0], None, [3.0], [0.5]])).number == 3


def test_several_objectives_rank_by_the_primary_one():
    study = _study(["minimize", "maximize"], [[2.0, 9.0], [1.0, 0.0], None, [3.0, 5.0]])
    assert best_trial(study).number == 1


def test_no_complete_trial_is_none():
    assert best_trial(_study(["maximize"], [None])) is None
    assert best_trial(_study(["maximize", "minimize"], [])) is None
