"""What a study found, for the places users look first in MLflow: trial run names that say what
each trial is, and the parent run's description (the best trial and a table per prior family)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from storage.records import REPORTED_METRICS, TrialRecord, final_components, prior_family

LABEL_SKIPPED = {"prior.k_max", "imr.enabled", "prior.learn"}  # the family says these
LABEL_PARAMS = 3  # searched values shown in a run name
METRIC_LABELS = {
    "elbo": "ELBO",
    "log_z": "log Z estimate",
    "delta_log_z": "ΔlogZ",
    "ess": "ESS",
    "sinkhorn": "Sinkhorn",
    "emc": "EMC",
}


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1e}" if value and abs(value) < 1e-2 else f"{value:.3g}"
    return str(value)


def family_label(params: Mapping[str, Any]) -> str:
    """The prior family with its size, e.g. 'GMP K=10 +IMR' or 'Gaussian (learned)'."""
    family = prior_family(params)
    k = final_components(params)
    if k == 1:
        return family
    base, _, rest = family.partition("+IMR")
    return f"{base} K={k}" + (f" +IMR{rest}" if "+IMR" in family else "")


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
    return " · ".join([family_label(params), *shown, *suffix])


def study_note(
    study: str,
    records: Sequence[TrialRecord],
    objective: str,
    best: TrialRecord | None,
    names: Mapping[str, str],
) -> str:
    """The parent run's description (Markdown): the best trial, then one row per prior family
    with the mean of each trial's last evaluations (PAPER.md's protocol)."""
    label = METRIC_LABELS.get(objective, objective)
    lines = [f"## {study}", ""]
    if best is not None:
        lines += [
            f"**Best trial:** {names.get(best.trial_id, best.trial_id)}, {label} "
            f"{best.final(objective):.4g} (mean of its last evaluations), "
            f"{best.iterations:,} iterations.",
            "",
        ]
    metrics = [objective] + [
        m for m in REPORTED_METRICS if m != objective and any(m in r.history for r in records)
    ]
    header = ["prior family", "trials", *(METRIC_LABELS.get(m, m) for m in metrics)]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    families: dict[str, list[TrialRecord]] = {}
    for record in records:
        families.setdefault(family_label(record.params), []).append(record)
    for family, group in sorted(families.items()):
        cells = [family, str(len(group))]
        for metric in metrics:
            values = [v for v in (r.final(metric) for r in group) if math.isfinite(v)]
            cells.append(_mean_range(values))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Each value is a trial's mean over its last 5 evaluations; with several trials, their "
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
