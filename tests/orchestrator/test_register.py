"""A study's definition in its Optuna storage: what may change between runs, what may not."""

import json

import pytest
from optuna.trial import TrialState

from orchestrator.driver import SPEC_ATTR, StudyConflictError, register_study
from orchestrator.spec import parse_spec
from storage.optuna_storage import open_storage
from tests.e2e.conftest import SMALL_STUDY


def _spec(**changes):
    return parse_spec({**SMALL_STUDY, "name": "registered", **changes})


def test_more_trials_may_be_given_and_the_new_budget_is_stored(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    register_study(_spec(), storage)
    study = register_study(_spec(budget={**SMALL_STUDY["budget"], "trials": 9}), storage)
    assert json.loads(study.user_attrs[SPEC_ATTR])["budget"]["trials"] == 9


def test_other_changes_are_refused_naming_the_fields(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    register_study(_spec(), storage)
    longer = _spec(budget={**SMALL_STUDY["budget"], "iterations": 60}, seed=3)
    with pytest.raises(StudyConflictError, match=r"\(budget.iterations, seed changed\)"):
        register_study(longer, storage)


def test_a_study_stored_before_a_field_existed_resumes(tmp_path):
    """A definition written before `search.first_trials` existed is the same study now."""
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = register_study(_spec(), storage)
    older = json.loads(study.user_attrs[SPEC_ATTR])
    del older["search"]["first_trials"]  # as a version without the field stored it
    study.set_user_attr(SPEC_ATTR, json.dumps(older))
    register_study(_spec(), storage)  # no conflict
    with pytest.raises(StudyConflictError, match=r"\(search.first_trials changed\)"):
        register_study(_spec(search={"first_trials": [{"prior.k_max": 1}]}), storage)


def test_first_trials_are_queued_once_in_order(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    first = [{"prior.k_max": 1, "imr.enabled": False}, {"prior.k_max": 3, "imr.enabled": True}]
    spec = _spec(search={"first_trials": first})
    register_study(spec, storage)
    study = register_study(spec, storage)  # a rerun queues nothing more
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.WAITING] * 2
    assert [t.system_attrs["fixed_params"] for t in trials] == first
