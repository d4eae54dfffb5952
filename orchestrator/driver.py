"""Runs a study: local (or cluster) Ray, Tune with Optuna, MLflow tracking; resumes by name."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import ray
import torch
from pydantic import ValidationError
from ray import tune

import targets
from orchestrator import tuning
from orchestrator.interrupt import InterruptWatch
from orchestrator.progress import StudyReporter
from orchestrator.recovery import (
    HeadWatch,
    OrphanReaper,
    StudyLease,
    counted_trials,
    joining_experiment,
)
from orchestrator.spec import Storage, StudySpec
from orchestrator.threads import openmp_environment
from storage.layout import StudyPaths
from storage.optuna_storage import (
    CURRENT_ATTR,
    SPEC_ATTR,
    TUNE_ID_ATTR,
    load_study,
    open_storage,
    password_to_env,
    without_experimental_warning,
)
from storage.records import prior_family
from storage.tracking import StudyTracker, credentials_to_env
from trainers.metrics import EMC, ESS

OPTUNA_URL_ENV, MLFLOW_URI_ENV = "GMP_OPTUNA_URL", "GMP_MLFLOW_URI"
GROWS = "budget.trials"  # the one field of a study's definition that may change between runs
HEAD_LOST_EXIT = 1  # the CLI's failure exit: the driver ends from the head watch's thread
RELEASE_WAIT_S = 5.0
SNAPSHOT_PERIOD_S = 1  # Tune's experiment snapshot (what a resumed study restarts from)
CHECKPOINTS_KEPT = 3  # per trial: more than the snapshot can fall behind
RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"  # warns at ray.init


class StudyConflictError(ValueError):
    """A study of the same name exists with a different definition."""


@dataclass(frozen=True)
class StudyLocations:
    """Resolved storage of one study: Optuna URL, MLflow URI and artifact folder, Tune folder."""

    optuna_url: str
    mlflow_uri: str
    mlflow_artifacts: str | None
    experiment_dir: Path

    @classmethod
    def resolve(cls, spec: StudySpec, root: Path | None = None) -> StudyLocations:
        """Spec URLs win, then environment variables, then files under the root."""
        root = Path(root) if root is not None else spec.storage.root
        return cls.named(spec.name, root, spec.storage.optuna_url, spec.storage.mlflow_uri)

    @classmethod
    def named(
        cls,
        name: str,
        root: Path,
        optuna_url: str | None = None,
        mlflow_uri: str | None = None,
    ) -> StudyLocations:
        """Study `name`'s storage: given URLs win, then environment variables, then the root."""
        paths = StudyPaths(Path(root))
        mlflow_uri = mlflow_uri or os.environ.get(MLFLOW_URI_ENV)
        artifacts = None if mlflow_uri else paths.study_artifacts(name)
        return cls(
            optuna_url=optuna_url or os.environ.get(OPTUNA_URL_ENV) or paths.optuna_url,
            mlflow_uri=mlflow_uri or paths.mlflow_uri,
            mlflow_artifacts=artifacts.as_uri() if artifacts else None,
            experiment_dir=paths.experiment_dir(name),
        )


def register_study(spec: StudySpec, storage: optuna.storages.BaseStorage) -> optuna.Study:
    """Create the Optuna study (or check that an existing one has the same definition), and
    queue the spec's first trials in a new one.

    The number of trials may change between runs (a study is given more trials by raising it);
    any other change to the definition is a conflict."""
    definition = _definition(spec)
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        directions=[goal.direction for goal in spec.objective],
        load_if_exists=True,
    )
    stored = study.user_attrs.get(SPEC_ATTR)
    changed = _changes(stored, definition) if stored is not None else []
    if changed:
        longer = (
            "; Optuna cannot reopen a finished trial to train it longer: `gmp train FILE --set "
            "KEY=VALUE --iterations N` trains one configuration longer"
            if "budget.iterations" in changed
            else ""
        )
        raise StudyConflictError(
            f"a study named {spec.name!r} already exists with a different definition "
            f"({', '.join(changed)} changed); give this study a new name (or restore the "
            f"original file to resume it); only budget.trials may change{longer}"
        )
    if stored != definition:
        study.set_user_attr(SPEC_ATTR, definition)
    metrics = [goal.metric for goal in spec.objective]
    if study.metric_names != metrics:  # Optuna's tools (the dashboard) name the objectives
        with without_experimental_warning():
            study.set_metric_names(metrics)
    if not study.get_trials(deepcopy=False):
        for point in spec.search.first_trials:
            study.enqueue_trial(point, skip_if_exists=False)
    return study


def _definition(spec: StudySpec) -> str:
    """The spec without where it runs or is stored (those may change between runs)."""
    return spec.model_dump_json(exclude={"storage", "address", "description"})


def _changes(stored: str, definition: str) -> list[str]:
    """The dotted fields in which two definitions differ, but for the number of trials (which
    may grow between runs). A field added to the study file's schema since `stored` was
    written counts as its default there, so that studies made by earlier versions resume."""
    # a field since removed or changed fails validation: then the texts are compared as they are
    with contextlib.suppress(ValidationError):
        stored = _definition(StudySpec.model_validate_json(stored))
    old, new = _flatten(json.loads(stored)), _flatten(json.loads(definition))
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k != GROWS)


def start_ray(
    address: str | None, num_cpus: int | None = None, code_dir: Path | None = None
) -> bool:
    """Connect to `address`, or start a local Ray with no dashboard whose workers start with the
    thread policy's OpenMP settings and also import from `code_dir` (a cluster's workers take
    their OpenMP settings from the package import, and import what is installed or shipped with
    the job).

    Returns True if this call started Ray (the caller then shuts it down)."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # a local Ray turns token authentication on by default and warns that it did
        logging.getLogger(RAY_AUTH_LOGGER).setLevel(logging.ERROR)
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            configure_logging=True,
            logging_level="WARNING",
            runtime_env=_worker_env(code_dir),
        )
    return True


def _worker_env(code_dir: Path | None) -> dict[str, Any]:
    """A local Ray's runtime environment: the OpenMP settings, and a PYTHONPATH that ends with
    `code_dir` (None: no change)."""
    env_vars = openmp_environment()
    if code_dir is not None:
        entries = [os.environ.get("PYTHONPATH", ""), str(code_dir)]
        env_vars["PYTHONPATH"] = os.pathsep.join(e for e in entries if e)
    return {"env_vars": env_vars}


def run_study(
    spec: StudySpec,
    spec_text: str,
    root: Path | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    verbose: int = 1,
    join: bool = False,
    code_dir: Path | None = None,
) -> tune.ResultGrid | list:
    """Run (or resume) the study to its budget; returns Tune's results (an empty list when
    the study was already complete).

    Refuses (StudyBusyError) while another driver runs the study, unless `join`: then this
    driver runs its own Tune experiment on the same Optuna study until the study's budget.
    A study whose budget.trials was raised after it finished runs the added trials as a new
    Tune experiment of the same Optuna study. Ctrl-C saves the state and raises
    StudyInterruptedError; running the study again resumes it. A target given as
    `module:function` is imported by the trials' workers too: a local Ray's workers find it in
    `code_dir` (the study file's folder) as well as on their import path."""
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's resume snapshot at most a second behind the trials' checkpoints (its default
    # waits 10 s or more), so that it never names a checkpoint that was already rotated out
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(SNAPSHOT_PERIOD_S))
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the engine that prints a ProgressReporter's table
    _quiet_start_up_notices()
    where = StudyLocations.resolve(spec, root)
    where = replace(where, optuna_url=password_to_env(where.optuna_url))  # Tune pickles URLs
    storage = open_storage(where.optuna_url)
    study = register_study(spec, storage)
    if study_complete(spec, study):
        return []
    if not targets.plugins.is_reference(spec.target.name):
        code_dir = None
    results: tune.ResultGrid | list = []
    with InterruptWatch() as watch:
        cluster = address or spec.address
        started = start_ray(cluster, num_cpus, code_dir)
        try:
            for _ in range(2):  # the current experiment, then one for trials added since
                experiment = joining_experiment(spec.name) if join else _current(study)
                lease = StudyLease(where.optuna_url, spec.name, experiment, exclusive=not join)
                with lease:
                    watch.check()
                    tuner, restored = _tuner(
                        spec, spec_text, where, storage, verbose, experiment, local=not cluster
                    )
                    results = _fit(tuner, lease, spec.name, watched=bool(cluster))
                watch.check()
                if join or not restored or study_complete(spec, study):
                    break
                counted = counted_trials(study.get_trials(deepcopy=False))
                study.set_user_attr(CURRENT_ATTR, f"{spec.name}.more-{counted}")
        finally:
            if started:
                ray.shutdown()
    return results


def _quiet_start_up_notices() -> None:
    """Keep the libraries' start-up notices (Optuna's "study created" or "using an existing
    study", MLflow's "creating database tables") off the study's terminal, which shows the
    study's own table; their warnings and errors still show."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)


def study_complete(spec: StudySpec, study: optuna.Study) -> bool:
    """Whether the study has run its budget of trials and none is left to run or resume."""
    trials = study.get_trials(deepcopy=False)
    unfinished = any(not t.state.is_finished() for t in trials)
    return not unfinished and counted_trials(trials) >= spec.budget.trials


def _current(study: optuna.Study) -> str:
    """The study's Tune experiment that a (non-joining) driver runs or resumes."""
    return study.user_attrs.get(CURRENT_ATTR, study.study_name)


def _fit(tuner: tune.Tuner, lease: StudyLease, study: str, watched: bool) -> tune.ResultGrid:
    """`tuner.fit()`; on a cluster (`watched`) a lost head ends the driver (`_head_lost`)."""
    if not watched:
        return tuner.fit()
    gcs_address = ray.get_runtime_context().gcs_address
    with HeadWatch(gcs_address, partial(_head_lost, lease, study, gcs_address)):
        return tuner.fit()


def _head_lost(lease: StudyLease, study: str, gcs_address: str, lost_for_s: float) -> None:
    """End a driver whose cluster head went away: say so, release the study's lease (when its
    storage still answers), exit non-zero. Tune's experiment folder, the trials' checkpoints
    and the Optuna and MLflow records stay as they are, so running the same command on a
    cluster that runs again resumes the study."""
    print(
        f"error: lost the Ray cluster's head ({gcs_address} has not answered for "
        f"{lost_for_s:.0f} s); study {study} stops here with its records intact. Start the "
        "cluster again and run the same `gmp study run` command (with the new --address) to "
        "resume it from its trials' last checkpoints.",
        file=sys.stderr,
        flush=True,
    )
    releasing = threading.Thread(target=lease.release, name="gmp-lease-release", daemon=True)
    releasing.start()
    releasing.join(RELEASE_WAIT_S)
    os._exit(HEAD_LOST_EXIT)  # Tune waits on the lost cluster: no clean way out of fit()


def _tuner(
    spec: StudySpec,
    spec_text: str,
    where: StudyLocations,
    storage: optuna.storages.BaseStorage,
    verbose: int,
    experiment: str,
    local: bool,
) -> tuple[tune.Tuner, bool]:
    """The experiment's Tuner, restored if it exists (then True).

    A trial's actor is reused for the next trial on a local Ray only (`local`): Tune fails a
    trial outright, without its restarts, when the node of the reused actor is lost while the
    actor is being handed over to it, where a new actor's trial is restarted."""
    trainable = tuning.trainable(spec)
    tracking_uri = credentials_to_env(where.mlflow_uri)
    experiment_dir = where.experiment_dir.parent / experiment
    without_storage = spec.model_copy(update={"storage": Storage()})  # Tune pickles it
    callbacks = [
        OrphanReaper(where.optuna_url, spec.name, experiment, tracking_uri),
        StudyTracker(
            study=spec.name,
            tracking_uri=tracking_uri,
            artifact_location=where.mlflow_artifacts,
            optuna_url=where.optuna_url,
            spec_text=spec_text,
            flat_config=partial(flat_trainer_config, without_storage),
            log_density=_log_density(spec),
            objective=spec.primary.metric,
            iterations=spec.budget.iterations,
        ),
    ]
    reporter = _reporter(without_storage, where.optuna_url)
    if tune.Tuner.can_restore(str(experiment_dir)):
        restored = tune.Tuner.restore(
            str(experiment_dir), trainable=trainable, resume_unfinished=True
        )
        _renew(restored, callbacks, reporter, verbose, reuse_actors=local)
        return restored, True
    single = len(spec.objective) == 1
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=tuning.searcher(spec, storage, experiment),
            scheduler=tuning.scheduler(spec),
            num_samples=spec.budget.trials,
            metric=spec.primary.metric if single else None,
            mode=tuning.TUNE_MODES[spec.primary.direction] if single else None,
            time_budget_s=spec.budget.time_limit_s,
            reuse_actors=local,
        ),
        run_config=tune.RunConfig(
            name=experiment,
            storage_path=str(experiment_dir.parent),
            failure_config=tune.FailureConfig(max_failures=spec.failures.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=CHECKPOINTS_KEPT, checkpoint_frequency=1, checkpoint_at_end=True
            ),
            callbacks=callbacks,
            progress_reporter=reporter,
            verbose=verbose,
        ),
    )
    return tuner, False


def _renew(
    tuner: tune.Tuner,
    callbacks: list[tune.Callback],
    reporter: StudyReporter,
    verbose: int,
    reuse_actors: bool,
) -> None:
    """Give a restored Tuner this driver's callbacks, table and actor reuse. Tune restores the
    ones pickled when the experiment began, so a study begun by an earlier gmp (or on another
    kind of cluster) would otherwise resume with that run's output and settings. Tune has no
    public setter for these: they live on the Tuner's internal run and tune configs."""
    internal = tuner._local_tuner
    internal._run_config.callbacks = callbacks
    internal._run_config.progress_reporter = reporter
    internal._run_config.verbose = verbose
    internal._tune_config.reuse_actors = reuse_actors


def _reporter(spec: StudySpec, optuna_url: str) -> StudyReporter:
    """The study's live table in the terminal (see run_study: Tune's legacy output engine)."""
    shown = [ESS] + ([EMC] if targets.info(spec.target.name).modes else [])
    return StudyReporter(
        study=spec.name,
        objective=spec.primary.metric,
        iterations=spec.budget.iterations,
        trials=spec.budget.trials,
        metrics=[m for m in shown if m != spec.primary.metric],
        family=partial(trial_family, spec),
        numbers=partial(optuna_numbers, optuna_url, spec.name),
    )


def trial_family(spec: StudySpec, params: dict[str, Any]) -> str:
    """A trial's prior family with its size, e.g. 'GMP K=10 +IMR'."""
    return prior_family(flat_trainer_config(spec, params), sized=True)


def optuna_numbers(optuna_url: str, study: str) -> dict[str, int]:
    """Tune trial id -> Optuna trial number, for the study's trials tagged so far."""
    trials = load_study(optuna_url, study).get_trials(deepcopy=False)
    return {t.user_attrs[TUNE_ID_ATTR]: t.number for t in trials if TUNE_ID_ATTR in t.user_attrs}


def flat_trainer_config(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    """Every hyperparameter of a trial as dotted keys (for MLflow params)."""
    config = spec.trainer_config({k: params[k] for k in spec.search_space if k in params})
    return _flatten(config.model_dump(mode="json"))


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _log_density(spec: StudySpec) -> Any:
    """The target's log density for 2-d plots (None for other dimensions)."""
    target = targets.make(spec.target.name, **spec.target.kwargs)
    if target.dim != 2:
        return None

    def log_density(points: np.ndarray) -> np.ndarray:
        return target.log_prob(torch.from_numpy(points)).numpy()

    return log_density
