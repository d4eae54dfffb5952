"""MLflow tracking of a study as a Tune callback in the driver (the single writer).

An experiment per study, a parent run per study, a nested run per trial keyed by the study name
and Tune trial id (so a resumed study reuses its runs), metrics at every evaluation, and the
artifacts of PAPER.md's workflow: checkpoint, samples (Parquet), plots; on the parent run the
study file, Optuna's plots and the trials table.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit, urlunsplit

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from optuna.trial import TrialState
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.tune.result import TRAINING_ITERATION

from storage.answer import study_note, trial_run_name
from storage.mlflow_client import ReconnectingClient
from storage.optuna_storage import (
    INTERRUPTED_ATTR,
    TUNE_ID_ATTR,
    best_trial,
    load_study,
    open_storage,
    redact,
    without_experimental_warning,
)
from storage.plots import plot_curves, plot_samples
from storage.records import REPORTED_METRICS, TrialRecord, collect, prior_family
from storage.runs import (
    BEST_RUN_TAG,
    BEST_TRIAL_TAG,
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    FAMILY_TAG,
    MODEL_DEVELOPMENT,
    NOTE_TAG,
    OPTUNA_STORAGE_TAG,
    OPTUNA_TAG,
    PARENT_TAG,
    ROLE_TAG,
    STATE_TAG,
    STUDY_TAG,
    TRIAL_TAG,
    run_filter,
    study_runs,
)
from storage.samples import read_samples, sample_summary
from trainers.metrics import (
    ACTIVE_K,
    ELBO,
    METRIC_NAMES,
    TRAIN_LOSS,
    TRAIN_TEMPERATURE,
    TRAIN_TIME_HORIZON,
)

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

CURVE_METRICS = (
    *METRIC_NAMES,
    TRAIN_LOSS,
    ACTIVE_K,
    TRAIN_TIME_HORIZON,
    TRAIN_TEMPERATURE,
)
ANSWER_INTERVAL_S = 30.0  # the parent's answer is rewritten at most this often during a study
SKIPPED_RESULT_KEYS = {"done", "iteration", "timestamp", "pid"}
_FAILURE_HEADER = re.compile(r"^Failure # \d+ \(occurred at [^)]*\)$", re.MULTILINE)


class StudyTracker(MLflowLoggerCallback):
    """Records a study in MLflow; builds on Ray's MLflow logger (experiment set-up, run ends).

    `spec_text` is the study file as written by the user; `flat_config(params)` turns a trial's
    sampled parameters into every hyperparameter to log; `log_density` (optional) draws the
    target under 2-d sample plots; `iterations` (the budget per trial) tells a trial that Tune's
    scheduler stopped early (state STOPPED) from one that ran to its end (TERMINATED).
    """

    def __init__(
        self,
        *,
        study: str,
        tracking_uri: str,
        artifact_location: str | None,
        optuna_url: str,
        spec_text: str,
        flat_config: Callable[[dict[str, Any]], dict[str, Any]],
        log_density: Callable[[np.ndarray], np.ndarray] | None = None,
        objective: str = ELBO,
        iterations: int | None = None,
    ) -> None:
        super().__init__(tracking_uri=tracking_uri, experiment_name=study)
        self.study = study
        self.artifact_location = artifact_location
        self.optuna_url = optuna_url
        self.spec_text = redact(spec_text)  # the copy logged (and pickled by Tune)
        self.flat_config = flat_config
        self.log_density = log_density
        self.objective = objective
        self.iterations = iterations

    # -- set-up ----------------------------------------------------------------------------
    def setup(self, *args: Any, **kwargs: Any) -> None:
        """Create (or find) the experiment and the study's parent run."""
        client = ReconnectingClient(self.tracking_uri)
        if client.get_experiment_by_name(self.study) is None:
            client.create_experiment(self.study, artifact_location=self.artifact_location)
        super().setup(*args, **kwargs)
        self.client = client
        self.experiment_id = client.get_experiment_by_name(self.study).experiment_id
        client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_DEVELOPMENT)
        self._logged_step: dict[str, int] = {}
        self._answer_written = -math.inf
        self._trial_runs = {}
        self.parent_run_id = self._find_or_create(
            {ROLE_TAG: "study"}, run_name=self.study, tags={ROLE_TAG: "study"}
        )
        with tempfile.TemporaryDirectory() as tmp:
            study_file = Path(tmp) / "study.yaml"
            study_file.write_text(self.spec_text)
            client.log_artifact(self.parent_run_id, str(study_file))
        client.set_terminated(self.parent_run_id, status="RUNNING")

    def _find(self, keys: dict[str, str]) -> Any:
        """This study's run with tags `keys`, or None."""
        query = run_filter(self.study, keys)
        found = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        return found[0] if found else None

    def _find_or_create(self, keys: dict[str, str], run_name: str, tags: dict[str, str]) -> str:
        found = self._find(keys)
        if found is not None:
            return found.info.run_id
        run = self.client.create_run(
            self.experiment_id, run_name=run_name, tags={STUDY_TAG: self.study, **tags}
        )
        return run.info.run_id

    # -- trials ----------------------------------------------------------------------------
    def log_trial_start(self, trial: Trial) -> None:
        """Find or create the trial's nested run; log every hyperparameter once."""
        if trial in self._trial_runs:
            self._reopen(trial, self._trial_runs[trial])
            return
        number = self._optuna_number(trial.trial_id)
        params = self.flat_config(dict(trial.config))
        name = trial_run_name(params, dict(trial.config), number)
        run_id = self._find_or_create(
            {TRIAL_TAG: trial.trial_id},
            run_name=name,
            tags={TRIAL_TAG: trial.trial_id, PARENT_TAG: self.parent_run_id, ROLE_TAG: "trial"},
        )
        self._trial_runs[trial] = run_id
        run = self.client.get_run(run_id)
        if run.info.run_name != name:  # a run from before a restart
            self.client.update_run(run_id, name=name)
        family = prior_family(params)
        tags = [RunTag(STATE_TAG, "RUNNING"), RunTag(FAMILY_TAG, family)]
        if number is not None:
            tags.append(RunTag(OPTUNA_TAG, str(number)))
        existing = run.data.params
        params = {k: v for k, v in {**params, "family": family}.items() if k not in existing}
        self.client.log_batch(
            run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()], tags=tags
        )
        history = self.client.get_metric_history(run_id, ELBO)
        self._logged_step[run_id] = max((m.step for m in history), default=-1)
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        self._clear_interrupted(trial)

    def _reopen(self, trial: Trial, run_id: str) -> None:
        """A trial that continues after its study was interrupted: running again in MLflow,
        and no longer marked interrupted in Optuna."""
        self._set_state(trial, "RUNNING")
        self.client.update_run(run_id, status="RUNNING")
        self._clear_interrupted(trial)

    def _clear_interrupted(self, trial: Trial) -> None:
        """Remove the interruption note of a trial that runs again (also one that was only
        queued when its study was interrupted, and so had no MLflow run)."""
        frozen = self._optuna_trial(trial.trial_id)
        if frozen is not None and frozen.user_attrs.get(INTERRUPTED_ATTR):
            storage = open_storage(self.optuna_url)
            study_id = storage.get_study_id_from_name(self.study)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, "")

    def log_trial_result(self, iteration: int, trial: Trial, result: dict[str, Any]) -> None:
        """Every numeric metric of one evaluation, at step = training iteration, exactly once."""
        run_id = self._trial_runs[trial]
        step = int(result.get("iteration", result.get(TRAINING_ITERATION, 0)))
        if step <= self._logged_step.get(run_id, -1):
            return
        timestamp = int(result.get("timestamp", 0) * 1000)
        metrics = [
            Metric(key, float(value), timestamp, step)
            for key, value in result.items()
            if key not in SKIPPED_RESULT_KEYS
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(value)
        ]
        for start in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[start : start + 500])
        self._logged_step[run_id] = step

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        """Artifacts of the last checkpoint, plots, final state and error reason."""
        run_id = self._trial_runs.get(trial)
        if run_id is None:
            return
        self._ended = {*getattr(self, "_ended", set()), trial.trial_id}
        if failed:
            self.client.set_tag(run_id, ERROR_TAG, failure_reason(trial)[:5000])
        self._log_trial_artifacts(trial, run_id)
        self._set_state(trial, "ERROR" if failed else self._end_state(trial))
        self.client.set_terminated(run_id, status="FAILED" if failed else "FINISHED")
        if time.monotonic() - self._answer_written > ANSWER_INTERVAL_S:
            self._write_answer()

    def _end_state(self, trial: Trial) -> str:
        """TERMINATED after the trial's whole budget, STOPPED when stopped before it."""
        budget = getattr(self, "iterations", None)  # None in trackers pickled before
        done = (trial.last_result or {}).get("iteration")
        return "STOPPED" if budget and done is not None and done < budget else "TERMINATED"

    def _mark_interrupted(self, trials: list[Trial]) -> list[Trial]:
        """Trials the run left unfinished (Ctrl-C, time limit): their MLflow runs KILLED with
        state INTERRUPTED, their Optuna trials (still RUNNING, to be resumed) with a note.

        Those are the trials that did not end in this run while their Optuna trial still runs
        (Tune marks the trials it stops at an interruption TERMINATED as well)."""
        storage = open_storage(self.optuna_url)
        study_id = storage.get_study_id_from_name(self.study)
        ended = getattr(self, "_ended", set())
        interrupted = []
        for trial in trials:
            frozen = self._optuna_trial(trial.trial_id)
            if trial.trial_id in ended or frozen is None or frozen.state.name != "RUNNING":
                continue
            interrupted.append(trial)
            done = (trial.last_result or {}).get("iteration", 0)
            note = f"interrupted at iteration {done}; run the study again to resume it"
            run_id = self._trial_runs.get(trial)
            if run_id is None:
                found = self._find({TRIAL_TAG: trial.trial_id})
                run_id = found.info.run_id if found is not None else None
            if run_id is not None:
                self.client.log_batch(
                    run_id, tags=[RunTag(STATE_TAG, "INTERRUPTED"), RunTag(ERROR_TAG, note)]
                )
                self.client.set_terminated(run_id, status="KILLED")
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            storage.set_trial_user_attr(trial_id, INTERRUPTED_ATTR, note)
        return interrupted

    def _set_state(self, trial: Trial, state: str) -> None:
        self.client.set_tag(self._trial_runs[trial], STATE_TAG, state)

    def _log_trial_artifacts(self, trial: Trial, run_id: str) -> None:
        checkpoint = trial.checkpoint
        with tempfile.TemporaryDirectory() as tmp:
            plots = Path(tmp) / "plots"
            history = {
                key: [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]
                for key in CURVE_METRICS
            }
            if any(history.values()):
                plot_curves(plots / "training_curves.png", history, title=trial.trial_id)
            if checkpoint is not None:
                with checkpoint.as_directory() as directory:
                    self.client.log_artifacts(run_id, directory, artifact_path="checkpoint")
                    samples_file = Path(directory) / "samples.parquet"
                    if samples_file.is_file():
                        self.client.log_artifact(run_id, str(samples_file), "samples")
                        samples, log_weights, components = read_samples(samples_file)
                        summary = sample_summary(samples, log_weights, components)
                        self.client.log_dict(run_id, summary, "samples/summary.json")
                        plot_samples(
                            plots / "samples.png",
                            samples,
                            components,
                            self.log_density,
                            title=f"{self.study} {trial.trial_id}",
                        )
            if plots.is_dir():
                self.client.log_artifacts(run_id, str(plots), artifact_path="plots")

    # -- study -----------------------------------------------------------------------------
    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        """Optuna's optimisation history and importances, and the trials table, on the parent."""
        super().on_experiment_end(trials, **info)
        interrupted = self._mark_interrupted(trials)
        self._end_runs_left_open(trials)
        study = load_study(self.optuna_url, self.study)
        with tempfile.TemporaryDirectory() as tmp:
            table = study.trials_dataframe(multi_index=False)
            table.to_parquet(Path(tmp) / "trials.parquet", index=False)
            _optuna_plots(study, Path(tmp))
            self.client.log_artifacts(self.parent_run_id, tmp, artifact_path="study")
        self._write_answer()
        finished = not interrupted and all(t.status in ("TERMINATED", "ERROR") for t in trials)
        self.client.set_tag(self.parent_run_id, OPTUNA_STORAGE_TAG, redact(self.optuna_url))
        self.client.set_terminated(self.parent_run_id, status="FINISHED" if finished else "KILLED")

    def _write_answer(self) -> None:
        """The study's answer on its parent run: the best trial (Optuna's) with its metrics, and
        a table per prior family as the run's description."""
        self._answer_written = time.monotonic()
        records = collect(self.client, [self.study])
        best = self._best_record(records)
        tags = [RunTag(NOTE_TAG, study_note(self.study, records, self.objective, best))]
        metrics = []
        if best is not None:
            tags += [
                RunTag(BEST_TRIAL_TAG, best.name or best.trial_id),
                RunTag(BEST_RUN_TAG, best.run_id),
            ]
            timestamp = int(time.time() * 1000)
            for metric in REPORTED_METRICS:
                value = best.final(metric)
                if math.isfinite(value):
                    metrics.append(Metric(f"best_{metric}", value, timestamp, best.iterations))
        self.client.log_batch(self.parent_run_id, metrics=metrics, tags=tags)

    def _best_record(self, records: list[TrialRecord]) -> TrialRecord | None:
        """The record of Optuna's best trial (single objective), if there is one yet."""
        study = load_study(self.optuna_url, self.study)
        if len(study.directions) != 1:
            return None
        best = best_trial(study)
        if best is None:  # no complete trial yet
            return None
        tune_id = best.user_attrs.get(TUNE_ID_ATTR)
        return next((r for r in records if r.trial_id == tune_id), None)

    def _end_runs_left_open(self, trials: list[Trial]) -> None:
        """End the runs of trials that ended before a restart while their driver died."""
        for trial in trials:
            if trial in self._trial_runs or trial.status not in ("TERMINATED", "ERROR"):
                continue
            found = self._find({TRIAL_TAG: trial.trial_id})
            if found is not None and found.info.status == "RUNNING":
                self._trial_runs[trial] = found.info.run_id
                self.log_trial_end(trial, failed=trial.status == "ERROR")

    def _optuna_number(self, trial_id: str) -> int | None:
        frozen = self._optuna_trial(trial_id)
        return frozen.number if frozen is not None else None

    def _optuna_trial(self, trial_id: str) -> Any:
        """The Optuna trial of Tune trial `trial_id` (a FrozenTrial), or None."""
        study = load_study(self.optuna_url, self.study)
        for frozen in study.get_trials(deepcopy=False):
            if frozen.user_attrs.get(TUNE_ID_ATTR) == trial_id:
                return frozen
        return None


def credentials_to_env(tracking_uri: str) -> str:
    """An http(s) `tracking_uri` without its user:password, which go to MLflow's
    MLFLOW_TRACKING_USERNAME/PASSWORD instead: then no URL that MLflow prints (run links) or
    Tune pickles (callbacks) carries the password. Other URIs are returned unchanged."""
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or parts.password is None:
        return tracking_uri
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username or "")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def failure_reason(trial: Trial) -> str:
    """Why a trial failed, from its last failure in Tune's error file, and how often it failed.

    The exception line (e.g. 'TrialFailedError: ...'), else the first line of the message (e.g.
    'The actor died unexpectedly ...' for a killed actor, with its pid)."""
    local = Path(trial.error_file) if trial.error_file else None
    text = local.read_text() if local is not None and local.is_file() else trial.get_error()
    last = _FAILURE_HEADER.split(text or "")[-1]
    lines = [line.strip() for line in last.splitlines() if line.strip()]
    exception_lines = [line for line in lines if "Error: " in line or "Exception: " in line]
    reason = exception_lines[-1] if exception_lines else (lines or ["unknown error"])[0]
    pid = next((line for line in lines if line.startswith("pid: ")), None)
    if not exception_lines and pid:
        reason += f" ({pid})"
    failures = trial.run_metadata.num_failures
    return f"{reason} [failure {failures}; max_failures {trial.max_failures}]"


def close_orphaned_runs(tracking_uri: str, study: str, trial_ids: list[str], reason: str) -> None:
    """Mark the still-running MLflow runs of these Tune trials KILLED, with the reason."""
    client = ReconnectingClient(tracking_uri)
    for trial_id in trial_ids:
        for run in study_runs(client, study, {TRIAL_TAG: trial_id}) or []:
            if run.info.status != "RUNNING":
                continue
            tags = [RunTag(STATE_TAG, "ORPHANED"), RunTag(ERROR_TAG, reason)]
            client.log_batch(run.info.run_id, tags=tags)
            client.set_terminated(run.info.run_id, status="KILLED")


def _optuna_plots(study: Any, folder: Path) -> None:
    """Optimisation history and parameter importances as PNG, each skipped where undefined:
    no finished trial yet (as when a study is interrupted early), or, for importances, fewer
    than two."""
    import optuna.visualization.matplotlib as ovm

    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    plots = {
        "optimization_history": (ovm.plot_optimization_history, 1),
        "param_importances": (ovm.plot_param_importances, 2),
    }
    for name, (draw, needed) in plots.items():
        if finished < needed:
            continue
        try:
            with without_experimental_warning():
                axes = (
                    draw(study)
                    if len(study.directions) == 1
                    else draw(study, target=lambda t: t.values[0])
                )
        except (ValueError, RuntimeError):
            continue
        figure = np.ravel(axes)[0].figure
        figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
