"""The one place where a study spec becomes Ray Tune objects (searcher, scheduler, resources)."""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from ray import tune
from ray.tune.result import TRAINING_ITERATION
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    TrialScheduler,
)
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from orchestrator.recovery import counted_trials
from orchestrator.spec import CategoricalParam, FloatParam, StudySpec
from orchestrator.trainable import GMPTrainable
from storage.optuna_storage import EXPERIMENT_ATTR, STOPPED_ATTR, TUNE_ID_ATTR

TUNE_MODES = {"maximize": "max", "minimize": "min"}


class TaggedOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch that tags each Optuna trial with its Tune trial id and experiment,
    stops asking once the study holds `budget` trials (counted over every driver of the study),
    and records a trial that Tune's scheduler stopped before its `iterations` as PRUNED (with
    the reason as a user attribute), not as COMPLETE.
    """

    def __init__(
        self, *args: Any, experiment: str, budget: int, iterations: int, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.experiment = experiment
        self.budget = budget
        self.iterations = iterations

    def suggest(self, trial_id: str) -> dict | str | None:
        """Ask Optuna for a configuration and tag the Optuna trial with `trial_id`."""
        if counted_trials(self._ot_study.get_trials(deepcopy=False)) >= self.budget:
            return Searcher.FINISHED
        params = super().suggest(trial_id)
        trial = self._ot_trials.get(trial_id)
        if trial is not None and TUNE_ID_ATTR not in trial.user_attrs:
            trial.set_user_attr(TUNE_ID_ATTR, trial_id)
            trial.set_user_attr(EXPERIMENT_ATTR, self.experiment)
        return params

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        """Tell Optuna the trial's end: PRUNED when it was stopped before its budget."""
        iterations = getattr(self, "iterations", None)  # None in searchers pickled before
        done = (result or {}).get("iteration", iterations)
        stopped = (
            not error
            and iterations is not None
            and done is not None
            and done < iterations
            and not isinstance(self.metric, list)
            and trial_id not in self._completed_trials
        )
        if not stopped:
            super().on_trial_complete(trial_id, result=result, error=error)
            return
        trial = self._ot_trials[trial_id]
        trial.set_user_attr(STOPPED_ATTR, f"stopped early at iteration {done} of {iterations}")
        self._ot_study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)


class AskTellGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler for a study that Tune drives by ask and tell. The study's trial
    budget ends it; Optuna's own stop after the last grid point is meant for the loop of
    `Study.optimize` and, outside one, only raises (which Tune would log as a warning)."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Any,
    ) -> None:
        """Nothing to do after a trial: there is no optimize loop to stop."""


def distributions(spec: StudySpec) -> dict[str, BaseDistribution]:
    """The search space as Optuna distributions (names are trainer setting paths)."""
    space: dict[str, BaseDistribution] = {}
    for name, param in spec.search_space.items():
        if isinstance(param, CategoricalParam):
            space[name] = CategoricalDistribution(param.choices)
        elif isinstance(param, FloatParam):
            space[name] = FloatDistribution(param.low, param.high, log=param.log, step=param.step)
        else:
            space[name] = IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return space


def optuna_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    """The Optuna sampler named by the spec's search algorithm."""
    seed = spec.search.seed
    algorithm = spec.search.algorithm
    if algorithm == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if algorithm == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    if algorithm == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    grid = {k: list(p.choices) for k, p in spec.search_space.items()}  # validated categorical
    return AskTellGridSampler(grid, seed=seed)


def searcher(
    spec: StudySpec, storage: optuna.storages.BaseStorage, experiment: str | None = None
) -> ConcurrencyLimiter:
    """Optuna (with the study's persistent storage) as Tune's search algorithm.

    `experiment` names the Tune experiment asking (default: the study's own)."""
    metrics = [goal.metric for goal in spec.objective]
    modes = [TUNE_MODES[goal.direction] for goal in spec.objective]
    search = TaggedOptunaSearch(
        space=distributions(spec),
        metric=metrics if len(metrics) > 1 else metrics[0],
        mode=modes if len(modes) > 1 else modes[0],
        sampler=optuna_sampler(spec),
        study_name=spec.name,
        storage=storage,
        experiment=experiment or spec.name,
        budget=spec.budget.trials,
        iterations=spec.budget.iterations,
    )
    return ConcurrencyLimiter(search, max_concurrent=spec.concurrency)


def scheduler(spec: StudySpec) -> TrialScheduler:
    """Tune's early-stopping scheduler; time is counted in evaluations."""
    kind = spec.scheduler.type
    if kind == "none":
        return FIFOScheduler()
    common: dict[str, Any] = {"time_attr": TRAINING_ITERATION}
    max_t = spec.budget.evaluations
    if kind == "asha":
        return ASHAScheduler(
            max_t=max_t,
            grace_period=min(spec.scheduler.grace_period, max_t),
            reduction_factor=spec.scheduler.reduction_factor,
            **common,
        )
    if kind == "hyperband":
        return HyperBandScheduler(
            max_t=max_t, reduction_factor=spec.scheduler.reduction_factor, **common
        )
    return MedianStoppingRule(
        grace_period=spec.scheduler.grace_period, min_samples_required=2, **common
    )


def trial_resources(spec: StudySpec) -> tune.PlacementGroupFactory:
    """A bundle for the trainable, plus bundles for its IMR tasks when IMR can run."""
    first: dict[str, float] = {"CPU": spec.resources.cpus}
    if spec.resources.gpus:
        first["GPU"] = spec.resources.gpus
    bundles = [first]
    if spec.imr_possible:
        task = {"CPU": spec.resources.imr_task_cpus}
        bundles += [task] * spec.resources.imr_parallel_tasks
    return tune.PlacementGroupFactory(bundles, strategy="PACK")


def trainable(spec: StudySpec) -> Any:
    """The trial trainable with the spec bound and the trial's resources attached."""
    spec_json = spec.model_dump_json(exclude={"storage"})  # trials need no storage URLs
    bound = tune.with_parameters(GMPTrainable, spec_json=spec_json)
    return tune.with_resources(bound, trial_resources(spec))
