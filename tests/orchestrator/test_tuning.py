"""The spec's mapping onto Optuna and Tune objects: samplers, distributions, resources."""

import copy

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from orchestrator import tuning
from orchestrator.spec import parse_spec
from tests.orchestrator.test_spec import VALID


def _spec(**changes):
    data = copy.deepcopy(VALID) | {"fixed": {"batch_size": 64}} | changes
    return parse_spec(data)


@pytest.mark.parametrize(
    ("algorithm", "kind"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("cmaes", optuna.samplers.CmaEsSampler),
        ("random", optuna.samplers.RandomSampler),
    ],
)
def test_each_search_algorithm_gives_its_optuna_sampler(algorithm, kind):
    assert isinstance(tuning.optuna_sampler(_spec(search={"algorithm": algorithm})), kind)


def test_grid_sampler_enumerates_the_categorical_space():
    space = {"prior.k_max": {"type": "categorical", "choices": [1, 4]}}
    spec = _spec(search={"algorithm": "grid"}, search_space=space)
    study = optuna.create_study(sampler=tuning.optuna_sampler(spec))
    study.optimize(lambda t: t.suggest_categorical("prior.k_max", [1, 4]), n_trials=2)
    assert sorted(t.params["prior.k_max"] for t in study.trials) == [1, 4]


def test_grid_study_driven_by_ask_and_tell_completes_its_last_point():
    # Optuna's own grid sampler raises "Study.stop is supposed to be invoked inside an
    # objective function" when the last grid point is told outside Study.optimize.
    space = {"prior.k_max": {"type": "categorical", "choices": [1, 4]}}
    spec = _spec(search={"algorithm": "grid"}, search_space=space)
    study = optuna.create_study(sampler=tuning.optuna_sampler(spec))
    distribution = {"prior.k_max": CategoricalDistribution([1, 4])}
    for value in (2.0, 1.0):
        study.tell(study.ask(distribution), value)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert sorted(t.params["prior.k_max"] for t in study.trials) == [1, 4]


def test_distributions_follow_the_search_space():
    space = tuning.distributions(_spec())
    assert space["prior.k_max"] == CategoricalDistribution([1, 4])
    assert space["optim.lr_network"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["time.n_steps"] == IntDistribution(8, 16)


def test_trial_resources_reserve_task_bundles_only_with_imr():
    resources = {"cpus": 0.5, "gpus": 0.25, "imr_task_cpus": 0.5, "imr_parallel_tasks": 2}
    without = tuning.trial_resources(_spec(resources=resources))
    assert without.bundles == [{"CPU": 0.5, "GPU": 0.25}]
    fixed = {"batch_size": 64, "imr": {"enabled": True}}
    with_imr = tuning.trial_resources(_spec(resources=resources, fixed=fixed))
    assert with_imr.bundles == [{"CPU": 0.5, "GPU": 0.25}, {"CPU": 0.5}, {"CPU": 0.5}]
