"""How a study's runs are named and found in MLflow: the tags gmp sets, and the lookup by tag."""

from __future__ import annotations

from collections.abc import Mapping

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

STUDY_TAG, TRIAL_TAG, ROLE_TAG = "gmp.study", "gmp.trial_id", "gmp.role"
OPTUNA_TAG, STATE_TAG, ERROR_TAG = "gmp.optuna_number", "gmp.state", "gmp.error"
PARENT_TAG = "mlflow.parentRunId"
FAMILY_TAG = "gmp.family"
BEST_TRIAL_TAG, BEST_RUN_TAG = "gmp.best_trial", "gmp.best_run_id"  # on the parent run
OPTUNA_STORAGE_TAG = "gmp.optuna_storage"  # on the parent run: the Optuna URL, password redacted
NOTE_TAG = "mlflow.note.content"  # the run's description, rendered as Markdown by the UI
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # how MLflow 3's UI opens the experiment
MODEL_DEVELOPMENT = "custom_model_development"  # opens on the runs (not on GenAI traces)


def run_filter(study: str, tags: Mapping[str, str]) -> str:
    """An MLflow search filter for the runs of `study` that carry every tag of `tags`."""
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in {STUDY_TAG: study, **tags}.items())


def study_runs(
    client: MlflowClient, study: str, tags: Mapping[str, str], max_results: int = 10_000
) -> list[Run] | None:
    """The runs of `study` tagged with `tags`; None where MLflow has no experiment of that name."""
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return None
    return client.search_runs(
        [experiment.experiment_id],
        filter_string=run_filter(study, tags),
        max_results=max_results,
    )
