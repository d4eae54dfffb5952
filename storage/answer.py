"""What a study found, for the places users look first in MLflow: trial run names that say what
each trial is, and the parent run's description (the best trial and a table per prior family)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from storage.records import (
    LAST_EVALUATIONS,
    REPORTED_METRICS,
    TrialRecord,
    markdown_table,
    prior_family,
)
from trainers.metrics import metric_label

LABEL_SKIPPED = {"prior.k_max", "imr.enabled", "prior.learn"}  # the family says these
LABEL_PARAMS = 3  # searched values shown in a run name


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1e}" if value and abs(value) < 1e-2 else f"{value:.3g}"
    return str(value)


def trial_run_name(
    params: Mapping[str, Any], searched: Mapping[str, Any], number: int | None
) -> str:
    """A trial's run name: family and size, a few searched values, Optuna's trial number, e.g.
    'GMP K=10 +IMR · lr_network 7.0e-04 · #3'."""
    shown = [
        f"{key.rsplit('.', 1)[-1]} {_short(value)}"
        for key, value in searched.items()
        if key not in LABEL_SKIPPED
    ][:LABEL_PARAMS]
    suffix = [f"#{number}"] if number is not None else []
    return " · ".join([prior_family(params, sized=True), *shown, *suffix])


def study_note(
    study: str,
    records: Sequence[TrialRecord],
    objective: str,
    best: TrialRecord | None,
) -> str:
    """The parent run's description (Markdown): the best trial, then one row per prior family
    with the mean of each trial's last evaluations (PAPER.md's protocol); trials without any
    evaluation are not counted."""
    label = metric_label(objective)
    lines = [f"## {study}", ""]
    if best is not None:
        lines += [
            f"**Best trial:** {best.name or best.trial_id}, {label} "
            f"{best.final(objective):.4g} (mean of its last evaluations), "
            f"{best.iterations:,} iterations.",
            "",
        ]
    metrics = [objective] + [
        m for m in REPORTED_METRICS if m != objective and any(m in r.history for r in records)
    ]
    header = ["prior family", "trials", *(metric_label(m) for m in metrics)]
    families: dict[str, list[TrialRecord]] = {}
    for record in records:
        if record.history:  # a trial killed before its first evaluation has nothing to show
            families.setdefault(prior_family(record.params, sized=True), []).append(record)
    rows = [
        [family, str(len(group))]
        + [
            _mean_range([v for v in (r.final(m) for r in group) if math.isfinite(v)])
            for m in metrics
        ]
        for family, group in sorted(families.items())
    ]
    lines += [
        markdown_table(header, rows),
        "",
        f"Each value is a trial's mean over its last {LAST_EVALUATIONS} evaluations; with "
        "several trials, their "
        "mean and range. Compare families with `gmp report " + study + " --out DIR`; export "
        "the best trial with `gmp export " + study + " --out DIR`.",
    ]
    return "\n".join(lines)


def _mean_range(values: list[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.4g}"
    return f"{mean:.4g} ({min(values):.4g} to {max(values):.4g})"
