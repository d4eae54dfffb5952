"""`gmp export`: one trial of a study as a self-contained sampler folder, optionally registered.

The folder holds the trainer's own format, `model.safetensors` + `config.json` (what
`trainers.load` reads), reduced to the model, with the trial's provenance and metrics added to
`config.json`, and a model card `README.md`. The checkpoint is downloaded from the trial's MLflow
run (artifacts under `checkpoint/`), so any machine that reaches the study's storage can export.
Registration logs the folder as an MLflow pyfunc *from code* (`storage/pyfunc_sampler.py`): the
registered model holds no pickle either.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, Schema

import targets
import trainers
from storage.optuna_storage import SPEC_ATTR, TUNE_ID_ATTR, best_trial, load_study
from storage.runs import OPTUNA_TAG, ROLE_TAG, STUDY_TAG, TRIAL_TAG, study_runs
from trainers.metrics import METRIC_NAMES, N_ACTIVE, TIME_HORIZON
from trainers.trainer import META_FILE, TENSORS_FILE, Trainer, read_state, write_state

CARD_FILE = "README.md"
EXPORT_FILES = (TENSORS_FILE, META_FILE, CARD_FILE)
CHECKPOINT_ARTIFACTS = "checkpoint"
CHAMPION = "champion"
SAMPLER_ARTIFACT = "sampler"  # the export folder inside the logged model
PYFUNC_CODE = Path(__file__).with_name("pyfunc_sampler.py")
CARD_METRICS = (*METRIC_NAMES, N_ACTIVE, TIME_HORIZON)
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
# What a registered sampler needs besides its code (trainers/ and targets/ travel with it).
MODEL_REQUIREMENTS = ("mlflow", "torch", "numpy", "pandas", "pydantic", "safetensors")


class ExportInputError(LookupError):
    """The study or trial asked for does not exist; the message names it and what does."""


class MissingCheckpointError(LookupError):
    """The trial exists but its records hold no checkpoint to export; the message says why."""


@dataclass(frozen=True)
class TrialSource:
    """One trial's identity and records: Optuna number and values, Tune id, MLflow run."""

    study: str
    number: int
    tune_trial_id: str | None = None
    state: str = "COMPLETE"
    params: dict[str, Any] = field(default_factory=dict)
    objective: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None


# -- finding the trial -----------------------------------------------------------------------
def find_trial(
    optuna_url: str, mlflow_uri: str, study: str, number: int | None = None
) -> TrialSource:
    """Trial `number` of `study` (default: the best complete trial by the primary objective)."""
    try:
        optuna_study = load_study(optuna_url, study)
    except KeyError as err:
        raise ExportInputError(str(err.args[0])) from None
    trials = optuna_study.get_trials(deepcopy=False)
    if number is None:
        chosen = best_trial(optuna_study)
        if chosen is None:
            raise ExportInputError(f"study {study!r} has no complete trial to export yet")
    else:
        by_number = {t.number: t for t in trials}
        if number not in by_number:
            known = f"0..{len(trials) - 1}" if trials else "none"
            raise ExportInputError(f"no trial {number} in study {study!r}; trial numbers: {known}")
        chosen = by_number[number]
    goals = json.loads(optuna_study.user_attrs.get(SPEC_ATTR, "{}")).get("objective", [])
    names = [goal["metric"] for goal in goals]
    tune_id = chosen.user_attrs.get(TUNE_ID_ATTR)
    return TrialSource(
        study=study,
        number=chosen.number,
        tune_trial_id=tune_id,
        state=chosen.state.name,
        params=dict(chosen.params),
        objective=dict(zip(names, chosen.values or [], strict=False)),
        run_id=_trial_run(MlflowClient(mlflow_uri), study, chosen.number, tune_id),
    )


def _trial_run(client: MlflowClient, study: str, number: int, tune_id: str | None) -> str:
    """The MLflow run id of the trial tagged with `tune_id`."""
    tags = {TRIAL_TAG: tune_id, ROLE_TAG: "trial"}
    runs = None if tune_id is None else study_runs(client, study, tags, max_results=1)
    if runs is None:
        why = (
            "no Tune trial id in Optuna" if tune_id is None else "no MLflow experiment of that name"
        )
        raise MissingCheckpointError(f"trial {number} of study {study!r} has no MLflow run: {why}")
    if not runs:
        raise MissingCheckpointError(
            f"trial {number} ({tune_id}) of study {study!r} has no MLflow run"
        )
    return runs[0].info.run_id


def download_checkpoint(client: MlflowClient, trial: TrialSource, folder: Path) -> Path:
    """The trial's checkpoint artifacts, downloaded into `folder`; the local checkpoint folder."""
    logged = {
        Path(item.path).name for item in client.list_artifacts(trial.run_id, CHECKPOINT_ARTIFACTS)
    }
    missing = [name for name in (TENSORS_FILE, META_FILE) if name not in logged]
    if missing:
        raise MissingCheckpointError(
            f"trial {trial.number} ({trial.tune_trial_id}, {trial.state}) of study "
            f"{trial.study!r} has no checkpoint in MLflow run {trial.run_id} (missing "
            f"{', '.join(f'{CHECKPOINT_ARTIFACTS}/{m}' for m in missing)}); a trial's checkpoint "
            "is logged when the trial ends"
        )
    return Path(client.download_artifacts(trial.run_id, CHECKPOINT_ARTIFACTS, str(folder)))


def recorded_metrics(client: MlflowClient, run_id: str, step: int) -> dict[str, float]:
    """Every metric the run recorded at `step` (a training iteration)."""
    metrics = {}
    for key in client.get_run(run_id).data.metrics:
        values = [m.value for m in client.get_metric_history(run_id, key) if m.step == step]
        if values:
            metrics[key] = values[-1]
    return dict(sorted(metrics.items()))


# -- the export folder -----------------------------------------------------------------------
def export_trial(
    optuna_url: str, mlflow_uri: str, study: str, out: str | Path, number: int | None = None
) -> Path:
    """Export trial `number` (default: the best) of `study` into folder `out`."""
    _check_empty(Path(out))
    trial = find_trial(optuna_url, mlflow_uri, study, number)
    client = MlflowClient(mlflow_uri)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = download_checkpoint(client, trial, Path(tmp))
        tensors, _ = read_state(checkpoint)
        metrics = recorded_metrics(client, trial.run_id, int(tensors["iteration"]))
        return write_export(checkpoint, out, trial, metrics)


def write_export(
    checkpoint: str | Path, out: str | Path, trial: TrialSource, metrics: dict[str, float]
) -> Path:
    """Write the model of a trainer checkpoint, its provenance and `metrics` into `out`.

    Keeps the sampler's parameters and iteration (optimiser and training RNG state are dropped:
    an export samples, it does not resume training) and sets the device to "auto".
    """
    out = Path(out)
    _check_empty(out)
    tensors, meta = read_state(checkpoint)
    tensors = {k: v for k, v in tensors.items() if k.startswith("model/") or k == "iteration"}
    config = {**meta["config"], "device": "auto"}
    trainer = Trainer.from_state(tensors, {**meta, "config": config})
    exported = {
        "format": meta["format"],
        "config": config,
        "imr_events": meta.get("imr_events", []),
        "target_evals": meta.get("target_evals", {}),  # what training it cost
        "model": _summary(trainer),
        "versions": _versions(),
        "trial": {
            "study": trial.study,
            "number": trial.number,
            "tune_trial_id": trial.tune_trial_id,
            "state": trial.state,
            "mlflow_run_id": trial.run_id,
            "params": trial.params,
            "objective": trial.objective,
        },
        "metrics": metrics,
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_state(out, tensors, exported)
    (out / CARD_FILE).write_text(model_card(exported))
    return out


def _check_empty(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: the export folder exists and is not empty")


def _summary(trainer: Trainer) -> dict[str, Any]:
    """What the exported sampler is: target, sampler, K, N, time horizon, seed, iteration."""
    config = trainer.config
    return {
        "target": config.target.name,
        "target_kwargs": config.target.kwargs,
        "dim": trainer.target.dim,
        "sampler": config.sampler,
        "k_max": config.prior.k_max,
        "k_active": trainer.prior.n_active,
        "n_steps": config.time.n_steps,
        "time_horizon": float(trainer.sampler.schedule.horizon().detach()),
        "seed": config.seed,
        "iteration": trainer.iteration,
        "dtype": config.dtype,
    }


def _versions() -> dict[str, str]:
    return {
        "gmp": importlib.metadata.version("gmp"),
        "torch": importlib.metadata.version("torch"),
        "safetensors": importlib.metadata.version("safetensors"),
        "python": platform.python_version(),
    }


def model_card(exported: dict[str, Any]) -> str:
    """The model card (Markdown) of an export's `config.json` contents."""
    model, trial, versions = exported["model"], exported["trial"], exported["versions"]
    kwargs = ", ".join(f"{k}={v}" for k, v in sorted(model["target_kwargs"].items()))
    target = f"{model['target']} ({kwargs})" if kwargs else model["target"]
    facts = [
        ("study", trial["study"]),
        ("Optuna trial", trial["number"]),
        ("Tune trial id", trial["tune_trial_id"] or "-"),
        ("MLflow run", trial["mlflow_run_id"] or "-"),
        ("trial state", trial["state"]),
        ("target", f"{target}, d = {model['dim']}"),
        ("sampler", model["sampler"]),
        ("K (k_max / active)", f"{model['k_max']} / {model['k_active']}"),
        ("N (diffusion steps)", model["n_steps"]),
        ("time horizon", f"{model['time_horizon']:.6g}"),
        ("seed", model["seed"]),
        ("training iteration", model["iteration"]),
        ("exported", exported["exported_at"]),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions.items())),
    ]
    objective = ", ".join(f"{k} = {v:.6g}" for k, v in trial["objective"].items()) or "-"
    lines = [
        f"# {model['sampler'].upper()} sampler for {model['target']}: "
        f"study {trial['study']}, trial {trial['number']}",
        "",
        f"A diffusion sampler with a {model['k_max']}-component Gaussian-mixture prior, exported "
        f"by `gmp export`. Objective: {objective}.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {name} | {value} |" for name, value in facts),
        "",
        f"## Metrics at iteration {model['iteration']} (as recorded in MLflow)",
        "",
        *_metrics_table({k: v for k, v in exported["metrics"].items() if k in CARD_METRICS}),
        "",
        "## Load",
        "",
        "Needs torch and this package's `trainers`/`targets` only; the files are safetensors and "
        "JSON (nothing is unpickled).",
        "",
        "```python",
        "import torch",
        "import trainers",
        "",
        'sampler = trainers.load("<this folder>")',
        "x, log_w = sampler.sample(1000)  # samples [1000, d], log importance weights [1000]",
        "# without a generator: the trial's evaluation stream (the same draws every call)",
        "x, log_w = sampler.sample(1000, torch.Generator().manual_seed(1))",
        "```",
        "",
        "`config.json` holds the full trainer configuration, the trial's parameters and every "
        "metric recorded at that iteration.",
        "",
    ]
    return "\n".join(lines)


def _metrics_table(metrics: dict[str, float]) -> list[str]:
    if not metrics:
        return ["(none recorded)"]
    return ["| metric | value |", "|---|---|", *(f"| {k} | {v:.6g} |" for k, v in metrics.items())]


# -- the MLflow Model Registry ---------------------------------------------------------------
def register(
    export_dir: str | Path, name: str, mlflow_uri: str, alias: str = CHAMPION
) -> ModelVersion:
    """Register the export as a pyfunc model version of `name` (from code) and alias it."""
    export_dir = Path(export_dir)
    exported = json.loads((export_dir / META_FILE).read_text())
    trial, model = exported["trial"], exported["model"]
    tags = {
        STUDY_TAG: trial["study"],
        OPTUNA_TAG: str(trial["number"]),
        TRIAL_TAG: str(trial["tune_trial_id"]),
    }
    client = MlflowClient(mlflow_uri, registry_uri=mlflow_uri)
    experiment = client.get_experiment_by_name(trial["study"])
    with _tracking_uri(mlflow_uri):
        logged = mlflow.initialize_logged_model(
            name="sampler",
            source_run_id=trial["mlflow_run_id"],
            experiment_id=experiment.experiment_id if experiment else None,
            tags=tags,
        )
        info = mlflow.pyfunc.log_model(
            python_model=str(PYFUNC_CODE),
            artifacts={SAMPLER_ARTIFACT: str(export_dir)},
            code_paths=[_package_dir(trainers), _package_dir(targets)],
            pip_requirements=[_pinned(dist) for dist in MODEL_REQUIREMENTS],
            signature=_signature(model["dim"]),
            input_example=pd.DataFrame({"n": [2], "seed": [0]}),
            registered_model_name=name,
            model_id=logged.model_id,
        )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    client.set_registered_model_alias(name, alias, version)
    return client.get_model_version(name, version)


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (tracking and registry) pointed at `uri` for the block, then back."""
    environment = {name: os.environ.get(name) for name in URI_VARIABLES}
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
        for name, value in environment.items():  # MLflow exports the URIs to subprocesses
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _signature(dim: int) -> ModelSignature:
    """Input: `n` samples (and an optional seed) per row; output: samples and log weights."""
    inputs = Schema([ColSpec("long", "n"), ColSpec("long", "seed", required=False)])
    columns = ["request", *(f"x{i}" for i in range(dim)), "log_weight"]
    outputs = Schema([ColSpec("long" if c == "request" else "double", c) for c in columns])
    return ModelSignature(inputs=inputs, outputs=outputs)


def _package_dir(module: Any) -> str:
    return str(Path(module.__file__).parent)


def _pinned(dist: str) -> str:
    return f"{dist}=={importlib.metadata.version(dist)}"
