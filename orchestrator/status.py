"""What a study has done so far, read from its Optuna storage and MLflow runs."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import optuna
from mlflow.tracking import MlflowClient
from ray.tune.result import TRAINING_ITERATION

from storage.optuna_storage import (
    INTERRUPTED_ATTR,
    SPEC_ATTR,
    STOPPED_ATTR,
    TUNE_ID_ATTR,
    load_study,
    open_storage,
)
from storage.records import prior_family
from storage.runs import ROLE_TAG, STATE_TAG, TRIAL_TAG, study_runs
from trainers.metrics import ACTIVE_K, METRIC_NAMES

SHOWN_METRICS = (*METRIC_NAMES, ACTIVE_K)
SHOWN_STATES = {
    "COMPLETE": "done",
    "PRUNED": "stopped early",
    "RUNNING": "running",
    "WAITING": "queued",
    "FAIL": "failed",
}


@dataclass
class TrialRow:
    """One trial of a study: identity, state, parameters, progress and last metrics."""

    number: int
    tune_id: str
    state: str
    params: dict[str, Any]
    values: list[float] | None
    evaluations: int
    metrics: dict[str, float] = field(default_factory=dict)
    tracked_state: str | None = None
    family: str = ""
    note: str = ""  # why it stopped early, or that it waits for the study to resume

    @property
    def shown_state(self) -> str:
        """The state as users read it: done, stopped early, running, interrupted, queued,
        failed (Optuna's COMPLETE, PRUNED, RUNNING, WAITING, FAIL)."""
        if self.state == "RUNNING" and self.note:
            return "interrupted"
        if self.state == "RUNNING" and self.tracked_state not in (None, "RUNNING"):
            return self.tracked_state.lower()
        return SHOWN_STATES.get(self.state, self.state.lower())


@dataclass
class StudyStatus:
    """A study's trials, its budget and its best trial (per the primary objective)."""

    name: str
    directions: list[str]
    budget_trials: int
    budget_evaluations: int
    objective: list[str]
    rows: list[TrialRow]

    @property
    def best(self) -> TrialRow | None:
        """The complete trial with the best primary objective value."""
        done = [r for r in self.rows if r.state == "COMPLETE" and r.values]
        if not done:
            return None
        sign = 1 if self.directions[0] == "maximize" else -1
        return max(done, key=lambda r: sign * r.values[0])


def study_status(optuna_url: str, mlflow_uri: str | None, name: str) -> StudyStatus:
    """Collect a study's status; `KeyError` with the known names if it does not exist."""
    study = load_study(optuna_url, name)
    stored = study.user_attrs.get(SPEC_ATTR, "{}")
    spec = json.loads(stored)
    budget = spec.get("budget", {})
    evaluations = -(-budget.get("iterations", 0) // max(1, budget.get("eval_interval", 1)))
    family = _family_namer(stored)
    rows = [
        TrialRow(
            number=t.number,
            tune_id=t.user_attrs.get(TUNE_ID_ATTR, "-"),
            state=t.state.name,
            params=t.params or dict(t.system_attrs.get("fixed_params", {})),
            values=t.values,
            evaluations=len(t.intermediate_values),
            family=family(t.params or t.system_attrs.get("fixed_params", {})),
            note=str(t.user_attrs.get(STOPPED_ATTR) or t.user_attrs.get(INTERRUPTED_ATTR) or ""),
        )
        for t in study.get_trials(deepcopy=False)
    ]
    if mlflow_uri:
        _attach_tracking(mlflow_uri, name, rows)
    return StudyStatus(
        name=name,
        directions=[d.name.lower() for d in study.directions],
        budget_trials=budget.get("trials", len(rows)),
        budget_evaluations=evaluations,
        objective=[g["metric"] for g in spec.get("objective", [])],
        rows=rows,
    )


def _family_namer(stored_spec: str) -> Callable[[dict[str, Any]], str]:
    """Names a trial's prior family from its searched values and the study's fixed ones."""
    from orchestrator.driver import flat_trainer_config
    from orchestrator.spec import StudySpec

    try:
        spec = StudySpec.model_validate_json(stored_spec)
    except ValueError:  # no (or an older) definition: the searched values alone
        return lambda params: prior_family(params, sized=True)

    def family(params: dict[str, Any]) -> str:
        try:
            return prior_family(flat_trainer_config(spec, params), sized=True)
        except (ValueError, KeyError):
            return prior_family(params, sized=True)

    return family


def _attach_tracking(mlflow_uri: str, name: str, rows: list[TrialRow]) -> None:
    client = MlflowClient(mlflow_uri)
    runs = study_runs(client, name, {ROLE_TAG: "trial"})
    if runs is None:
        return
    by_id = {run.data.tags.get(TRIAL_TAG): run for run in runs}
    for row in rows:
        run = by_id.get(row.tune_id)
        if run is not None:
            row.metrics = {k: v for k, v in run.data.metrics.items() if k in SHOWN_METRICS}
            row.evaluations = int(run.data.metrics.get(TRAINING_ITERATION, row.evaluations))
            row.tracked_state = run.data.tags.get(STATE_TAG)


def list_studies(optuna_url: str) -> list[optuna.study.StudySummary]:
    """Every study in an Optuna storage."""
    return optuna.get_all_study_summaries(open_storage(optuna_url))
