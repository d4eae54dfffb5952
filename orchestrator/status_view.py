"""`gmp study status` as plain text that reads at 80 columns and in a pipe: a table of trials
(no box drawing, no values cut short), the parameters under it, notes and the best trial."""

from __future__ import annotations

from orchestrator.progress import format_value, render_table
from orchestrator.status import StudyStatus, TrialRow
from storage.answer import LABEL_SKIPPED
from trainers.metrics import COMPARED_METRICS, METRIC_NAMES

# after the objective: the compared metrics in the catalogue's order, then the others (log Z)
METRIC_ORDER = COMPARED_METRICS + tuple(m for m in METRIC_NAMES if m not in COMPARED_METRICS)


def status_lines(status: StudyStatus, width: int) -> list[str]:
    """The status of a study as lines at most `width` wide where the columns allow it."""
    objective = status.objective[0] if status.objective else "value"
    present = {m for row in status.rows for m in row.metrics}
    metrics = [objective, *(m for m in METRIC_ORDER if m in present and m != objective)]
    header = ["trial", "family", "state", "progress", "K", *metrics]
    rows = [
        [
            str(row.number),
            row.family or "-",
            row.shown_state,
            f"{row.evaluations}/{status.budget_evaluations}",
            format_value(_int(row.metrics.get("active_k"))),
            *(format_value(_value(row, m, objective)) for m in metrics),
        ]
        for row in status.rows
    ]
    optional = ("K", *metrics[1:])  # dropped, last first, where the table is too wide
    lines = [f"study {status.name}: {len(status.rows)}/{status.budget_trials} trials"]
    lines += render_table(header, rows, width, optional)
    searched = [(row.number, _params(row.params)) for row in status.rows]
    searched = [(number, text) for number, text in searched if text]
    if searched:
        lines += ["", "parameters:"]
        lines += [f"  {number:>3}  {text}" for number, text in searched]
    notes = [(row.number, row.note) for row in status.rows if row.note]
    if notes:
        lines += ["", "notes:"]
        lines += [f"  {number:>3}  {note}" for number, note in notes]
    best = status.best
    if best is not None and best.values:
        lines += [
            "",
            f"best trial: {best.number} ({best.family}) {objective} = "
            f"{format_value(best.values[0])}",
        ]
    return lines


def _params(params: dict[str, object]) -> str:
    """Searched values the family does not already say, e.g. 'lr_network=0.001062'."""
    shown = {k: v for k, v in params.items() if k not in LABEL_SKIPPED}
    return ", ".join(f"{key.rsplit('.', 1)[-1]}={format_value(v)}" for key, v in shown.items())


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


def _value(row: TrialRow, metric: str, objective: str) -> float | None:
    """A row's last value of `metric`; the objective falls back to Optuna's value."""
    value = row.metrics.get(metric)
    if value is None and metric == objective and row.values:
        return row.values[0]
    return value
