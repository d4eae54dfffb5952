"""A self-contained comparison report of studies, built from their MLflow records.

Per target and sampler it compares the prior families of the paper (Gaussian fixed / learned,
GMP, GMP+IMR, and any annealing variant) on ELBO, ΔlogZ, ESS, Sinkhorn and EMC as mean ± std
over the trials of each group (the mean of each trial's last five evaluations, PAPER.md §5),
with K-sweep curves, training curves and sample plots coloured by mixture component. Output: a
folder with `report.md`, PNG figures and `report.html` (figures embedded, opens without a server).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import jinja2
import numpy as np
import torch
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

import targets
from storage.plots import plot_samples, save_figure
from storage.records import (
    LAST_EVALUATIONS,
    REPORTED_METRICS,
    TrialRecord,
    collect,
    markdown_table,
    parent_run_id,
    trial_samples,
)
from trainers.metrics import ELBO, metric_label

VARIANT_ORDER = ("Gaussian (fixed)", "Gaussian (learned)", "GMP (fixed)", "GMP", "GMP+IMR")
FINISHED = "TERMINATED"


@dataclass
class Group:
    """Trials of one target, sampler, prior family and K, finished on the full budget."""

    target: str
    sampler: str
    variant: str
    k: int
    trials: list[TrialRecord]

    def stats(self, metric: str) -> tuple[float, float, int]:
        """Mean and standard deviation over trials of each trial's final value, and the count."""
        values = [v for v in (t.final(metric) for t in self.trials) if math.isfinite(v)]
        if not values:
            return math.nan, math.nan, 0
        std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        return float(np.mean(values)), std, len(values)


@dataclass
class Report:
    """The grouped records of some studies, and the trials left out of the comparison."""

    studies: list[str]
    groups: list[Group]
    left_out: list[tuple[TrialRecord, str]]
    metrics: list[str]


def build_report(records: Sequence[TrialRecord], studies: Sequence[str]) -> Report:
    """Group finished full-budget trials by (target, sampler, family, K); list the others."""
    budget: dict[str, int] = defaultdict(int)
    for record in records:
        budget[record.study] = max(budget[record.study], record.iterations)
    grouped: dict[tuple[str, str, str, int], list[TrialRecord]] = defaultdict(list)
    left_out = []
    for record in records:
        if record.state != FINISHED:
            left_out.append((record, f"state {record.state}"))
        elif record.iterations < budget[record.study]:
            left_out.append(
                (record, f"stopped early at {record.iterations}/{budget[record.study]}")
            )
        else:
            key = (record.target_label, record.sampler, record.variant, record.k)
            grouped[key].append(record)
    groups = [Group(*key, trials) for key, trials in grouped.items()]
    groups.sort(key=lambda g: (g.target, g.sampler, _variant_rank(g.variant), g.variant, g.k))
    metrics = [m for m in REPORTED_METRICS if any(r.history.get(m) for r in records)]
    return Report(list(studies), groups, left_out, metrics)


def _variant_rank(variant: str) -> int:
    base = variant.split(" + ")[0]
    return VARIANT_ORDER.index(base) if base in VARIANT_ORDER else len(VARIANT_ORDER)


def _format(mean: float, std: float, n: int) -> str:
    if n == 0:
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


# -- figures -----------------------------------------------------------------------------------
def _sections(report: Report) -> dict[tuple[str, str], list[Group]]:
    sections: dict[tuple[str, str], list[Group]] = defaultdict(list)
    for group in report.groups:
        sections[(group.target, group.sampler)].append(group)
    return sections


def sweep_families(groups: list[Group]) -> dict[str, list[Group]]:
    """The K sweep's lines: groups by prior family, a Gaussian as the K = 1 end of its mixture
    family's line ('GMP', 'GMP (fixed)'); a family of one group is named by its own prior."""
    families: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        family = group.variant.replace("Gaussian (learned)", "GMP")
        families[family.replace("Gaussian (fixed)", "GMP (fixed)")].append(group)
    return {
        (name if len(members) > 1 else members[0].variant): sorted(members, key=lambda g: g.k)
        for name, members in families.items()
    }


def _k_sweep(path: Path, groups: list[Group], metrics: list[str], title: str) -> Path | None:
    """Each metric against K, one line per prior family (mean ± std over trials); None where
    all groups share one K."""
    if len({g.k for g in groups}) < 2:
        return None
    families = sweep_families(groups)
    n_cols = min(3, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    fig = Figure(figsize=(4.2 * n_cols, 3.2 * n_rows))
    axes = np.ravel(fig.subplots(n_rows, n_cols, squeeze=False))
    for ax in axes[len(metrics) :]:
        ax.axis("off")
    for ax, metric in zip(axes, metrics, strict=False):
        for variant, family in families.items():
            stats = [g.stats(metric) for g in family]
            ax.errorbar(
                [g.k for g in family],
                [s[0] for s in stats],
                yerr=[s[1] for s in stats],
                marker="o",
                capsize=3,
                label=variant,
            )
        ax.set_xscale("log", base=2)
        ks = sorted({g.k for g in groups})
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("K")
        ax.set_title(metric_label(metric, arrow=True))
    axes[0].legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)


def _training_curves(path: Path, groups: list[Group], metric: str, title: str) -> Path | None:
    """The metric against the training iteration, mean over each group's trials."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    drawn = False
    for group in groups:
        by_step: dict[int, list[float]] = defaultdict(list)
        for trial in group.trials:
            for step, value in trial.history.get(metric, []):
                if math.isfinite(value):
                    by_step[step].append(value)
        if by_step:
            steps = sorted(by_step)
            ax.plot(steps, [np.mean(by_step[s]) for s in steps], marker=".", label=_name(group))
            drawn = True
    if not drawn:
        return None
    ax.set_xlabel("iteration")
    ax.set_ylabel(metric_label(metric, arrow=True))
    ax.legend(fontsize=7)
    ax.set_title(title)
    return save_figure(fig, path)


def _name(group: Group) -> str:
    return group.variant if group.k == 1 else f"{group.variant}, K={group.k}"


def _log_density(record: TrialRecord) -> Callable[[np.ndarray], np.ndarray] | None:
    name, kwargs = record.target
    try:
        target = targets.make(name, **kwargs)
    except Exception:  # a target that needs data we do not have: plot without the density
        return None
    if target.dim != 2:
        return None
    return lambda points: target.log_prob(torch.from_numpy(points)).numpy()


# -- rendering -----------------------------------------------------------------------------
@dataclass
class _Section:
    title: str
    header: list[str]
    rows: list[list[str]]
    figures: list[tuple[str, Path]]


def _render_sections(report: Report, out: Path) -> list[_Section]:
    sections = []
    for (target, sampler), groups in _sections(report).items():
        title = f"{target}, {sampler.upper()}"
        slug = _slug(f"{target}_{sampler}")
        metrics = [m for m in report.metrics if any(g.stats(m)[2] for g in groups)]
        header = ["prior", "K", "trials", *(metric_label(m, arrow=True) for m in metrics)]
        rows = [
            [g.variant, str(g.k), str(len(g.trials))] + [_format(*g.stats(m)) for m in metrics]
            for g in groups
        ]
        figures = []
        sweep = _k_sweep(out / f"{slug}_k_sweep.png", groups, metrics, title)
        if sweep is not None:
            figures.append(("K sweep", sweep))
        curves = _training_curves(out / f"{slug}_{ELBO}_curves.png", groups, ELBO, title)
        if curves is not None:
            figures.append(("ELBO during training", curves))
        for group in groups:
            best = max(group.trials, key=lambda t: _finite_or(t.final(ELBO), -math.inf))
            drawn = trial_samples(best)
            if drawn is None:
                continue
            samples, _, components = drawn
            path = plot_samples(
                out / f"{slug}_{_slug(_name(group))}_samples.png",
                samples,
                components,
                _log_density(best),
                title=f"{_name(group)}: trial {best.trial_id}",
            )
            figures.append((f"samples of {_name(group)} (best trial, by component)", path))
        sections.append(_Section(title, header, rows, figures))
    return sections


def _finite_or(value: float, default: float) -> float:
    return value if math.isfinite(value) else default


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("storage", "templates"),
    autoescape=jinja2.select_autoescape(["html.j2"]),
    keep_trailing_newline=True,
)
_TEMPLATES.globals["markdown_table"] = markdown_table
_TEMPLATES.filters["png_base64"] = lambda path: base64.b64encode(path.read_bytes()).decode()


def _intro(commit: str | None) -> str:
    """What the report is made of, for the top of both pages."""
    return (
        f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC}"
        + (f" at commit {commit}" if commit else "")
        + " from the studies' MLflow records. Each value is the mean ± std over the trials of a "
        f"group of each trial's mean over its last {LAST_EVALUATIONS} evaluations."
    )


def _left_out(report: Report) -> list[str]:
    """One line per trial left out of the comparison, saying why."""
    return [f"{r.study}/{r.trial_id} ({_described(r)}): {why}" for r, why in report.left_out]


def _described(record: TrialRecord) -> str:
    """'GMP, K=5'; a trial killed before it logged its parameters has no family yet."""
    return f"{record.variant}, K={record.k}" if record.params else "no parameters recorded"


def _page(template: str, report: Report, sections: list[_Section], intro: str) -> str:
    """One page of the report from its template: report.md (figures as links to the PNGs
    beside it) or report.html (self-contained, figures embedded)."""
    return _TEMPLATES.get_template(template).render(
        studies=report.studies, intro=intro, sections=sections, left_out=_left_out(report)
    )


def write_report(
    client: MlflowClient,
    studies: Sequence[str],
    out: str | Path,
    *,
    commit: str | None = None,
    log_to_parent: bool = True,
) -> Report:
    """Write `report.md`, `report.html` and PNGs for `studies` into `out`; log them on MLflow.

    With `log_to_parent` the folder is also logged under `report/` on each study's parent run.
    Raises `RecordsError` for a study that is not in the store.
    """
    records = collect(client, studies)
    return render_report(records, studies, out, commit=commit, log_to_parent=log_to_parent)


def render_report(
    records: Sequence[TrialRecord],
    studies: Sequence[str],
    out: str | Path,
    *,
    commit: str | None = None,
    log_to_parent: bool = True,
) -> Report:
    """`write_report` for records already collected (possibly from several MLflow stores)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = build_report(records, studies)
    sections = _render_sections(report, out)
    intro = _intro(commit)
    for page in ("report.md", "report.html"):
        (out / page).write_text(_page(f"{page}.j2", report, sections, intro))
    if log_to_parent:
        stores = {r.study: r.tracking_uri for r in records}
        for study, uri in stores.items():
            client = MlflowClient(uri)
            run_id = parent_run_id(client, study)
            if run_id is not None:
                client.log_artifacts(run_id, str(out), artifact_path="report")
    return report
