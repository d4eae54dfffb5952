"""A study's trials as recorded in MLflow: parameters, metric histories and sample sets."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow.tracking import MlflowClient

from storage.runs import ROLE_TAG, STATE_TAG, TRIAL_TAG, study_runs
from storage.samples import read_samples
from trainers.metrics import COMPARED_METRICS, TRAIN_ELBO

REPORTED_METRICS = COMPARED_METRICS  # the catalogue's (trainers.metrics)
LAST_EVALUATIONS = 5  # PAPER.md §5: the mean of the last five evaluations


class RecordsError(LookupError):
    """A study (or its trials) is not in the MLflow store; the message names it."""


@dataclass
class TrialRecord:
    """One trial of a study as MLflow holds it."""

    study: str
    trial_id: str
    run_id: str
    state: str
    params: dict[str, Any]
    tracking_uri: str = ""
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    name: str = ""
    """the MLflow run's name"""

    @property
    def iterations(self) -> int:
        """The last training iteration with a recorded evaluation."""
        return max((step for points in self.history.values() for step, _ in points), default=0)

    def final(self, metric: str) -> float:
        """Mean of the metric's last `LAST_EVALUATIONS` finite values; NaN when never recorded."""
        values = [v for _, v in self.history.get(metric, []) if math.isfinite(v)]
        tail = values[-LAST_EVALUATIONS:]
        return float(np.mean(tail)) if tail else math.nan

    @property
    def target(self) -> tuple[str, dict[str, Any]]:
        """The target's registry name and keyword arguments."""
        prefix = "target.kwargs."
        kwargs = {k[len(prefix) :]: v for k, v in self.params.items() if k.startswith(prefix)}
        return str(self.params["target.name"]), kwargs

    @property
    def target_label(self) -> str:
        """The target with its arguments, e.g. 'gmm40 (dim=2)'."""
        name, kwargs = self.target
        args = ", ".join(f"{k}={v}" for k, v in sorted(kwargs.items()))
        return f"{name} ({args})" if args else name

    @property
    def sampler(self) -> str:
        """The diffusion sampler's name."""
        return str(self.params["sampler"])

    @property
    def k(self) -> int:
        """The components the trial's prior ends with (see `final_components`)."""
        return final_components(self.params)

    @property
    def variant(self) -> str:
        """Which prior family the trial belongs to (see `prior_family`)."""
        return prior_family(self.params)


def final_components(params: Mapping[str, Any]) -> int:
    """The components a trial's prior ends with, from its dotted hyperparameters: K_max, or
    k_init when no IMR adds any."""
    k_init = params.get("prior.k_init")
    if not params.get("imr.enabled", False) and isinstance(k_init, int):
        return k_init
    return int(params["prior.k_max"])


def prior_family(params: Mapping[str, Any], sized: bool = False) -> str:
    """Which prior family a trial with these dotted hyperparameters belongs to, as the paper
    compares them: Gaussian (fixed or learned), GMP, GMP+IMR, with any target annealing; `sized`
    adds the mixture's final size, e.g. 'GMP K=10 +IMR'."""
    learned = bool(params.get("prior.learn", True))
    imr = bool(params.get("imr.enabled", False))
    k = final_components(params)
    size = f" K={k}" if sized else ""
    if k == 1:
        name = "Gaussian (learned)" if learned else "Gaussian (fixed)"
    elif not learned:
        name = f"GMP (fixed){size}"
    elif imr:
        name = f"GMP{size} +IMR" if sized else "GMP+IMR"
    else:
        name = f"GMP{size}"
    schedule = params.get("annealing.schedule", "none")
    return name if schedule in (None, "none") else f"{name} + {schedule} annealing"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of `rows` under `header`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def collect(client: MlflowClient, studies: Iterable[str]) -> list[TrialRecord]:
    """Every trial of `studies` with its parameters and the histories of the reported metrics."""
    records = []
    for study in studies:
        runs = study_runs(client, study, {ROLE_TAG: "trial"})
        if runs is None:
            known = sorted(e.name for e in client.search_experiments())
            raise RecordsError(f"no study {study!r} in the MLflow store; known: {known}")
        for run in runs:
            record = TrialRecord(
                study=study,
                trial_id=run.data.tags.get(TRIAL_TAG, run.info.run_id),
                run_id=run.info.run_id,
                state=run.data.tags.get(STATE_TAG, run.info.status),
                params={k: _value(v) for k, v in run.data.params.items()},
                tracking_uri=client.tracking_uri,
                name=run.info.run_name or "",
            )
            for metric in (*REPORTED_METRICS, TRAIN_ELBO):
                if metric in run.data.metrics:
                    points = client.get_metric_history(run.info.run_id, metric)
                    record.history[metric] = sorted((m.step, m.value) for m in points)
            records.append(record)
    return sorted(records, key=lambda r: (r.study, r.trial_id))


def parent_run_id(client: MlflowClient, study: str) -> str | None:
    """The id of the study's parent run, if the study has one."""
    runs = study_runs(client, study, {ROLE_TAG: "study"}, max_results=1)
    return runs[0].info.run_id if runs else None


def trial_samples(record: TrialRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The trial's last evaluation samples (samples, log weights, components), if recorded."""
    client = MlflowClient(record.tracking_uri)
    names = {item.path for item in client.list_artifacts(record.run_id, "samples")}
    if "samples/samples.parquet" not in names:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = client.download_artifacts(record.run_id, "samples/samples.parquet", tmp)
        return read_samples(Path(path))


def _value(text: str) -> Any:
    """A logged parameter back as the YAML scalar it was written from."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text
