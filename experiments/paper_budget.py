"""The paper's own numbers beside ours at the paper's budget (PAPER.md §6), from MLflow records.

Trains nothing: it reads the MLflow records of the studies in examples/paper_budget/, run as a
user runs them (`gmp study run examples/paper_budget/funnel_dis.yaml --root ROOT`; running the
same command again continues a stopped study from its last checkpoints), and writes a Markdown
page with a section per study: one row per (prior family, metric) with the paper's value, ours
(the mean of the last 5 of 100 evaluations on 2000 samples, the paper's protocol), the
difference, the iterations done, wall and CPU time; a figure of ELBO against iteration; for each
target given a curve of the authors' JAX step (`--jax-curve TARGET=FILE`, made by `python -m
bench.jax_dis_step --target TARGET --no-target-score --authors --curve 1000`, with
`--prior-scale 10` for credit), a figure of the first iterations' training ELBO beside it at
equal iterations and beside earlier runs of the same studies under other settings (`--earlier
ROOT=LABEL`); where that curve covers the whole budget (`--curve 10000`), a figure of the training
ELBO over it, ours beside the JAX step's, for the studies with the authors' settings. A study not
under ROOT keeps its section as the page has it.

Usage: python -m experiments.paper_budget --root ROOT [--out docs/paper_budget.md]
           [--jax-curve TARGET=FILE ...] [--earlier ROOT=LABEL ...]
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from mlflow.tracking import MlflowClient

from storage.layout import StudyPaths
from storage.records import LAST_EVALUATIONS, TrialRecord, collect
from targets.logistic import credit_log_z
from trainers.metrics import TRAIN_ELBO


@dataclass(frozen=True)
class Section:
    """One section of the page: a paper-budget study (examples/paper_budget/FILE.yaml), the
    target whose paper values it is set beside, and its heading."""

    study: str
    file: str
    target: str
    title: str
    authors_settings: bool = False  # the JAX step's settings, friction or sigma2 learned


SECTIONS = {  # the page's sections by key (a key names its markers and figures)
    "credit": Section("paper-budget-credit-dis", "credit_dis", "credit", "credit", True),
    "funnel": Section("paper-budget-funnel-dis", "funnel_dis", "funnel", "funnel", True),
    "funnel_prior_lr": Section(
        "paper-budget-funnel-dis-prior-lr",
        "funnel_dis_prior_lr",
        "funnel",
        "funnel, the GMP with its prior's learning rate at 5e-3 (ten times the authors')",
    ),
    "funnel_k20": Section(
        "paper-budget-funnel-dis-k20",
        "funnel_dis_k20",
        "funnel",
        "funnel, a GMP of 20 components with its prior's learning rate at 5e-3",
    ),
    "credit_prior_lr": Section(
        "paper-budget-credit-dis-prior-lr",
        "credit_dis_prior_lr",
        "credit",
        "credit, the prior's learning rate at 5e-3 (ten times the authors')",
    ),
    "credit_fast_network": Section(
        "paper-budget-credit-dis-fast-network",
        "credit_dis_fast_network",
        "credit",
        "credit, the prior's learning rate at 5e-3 and the network's at 1e-3",
    ),
    "credit_friction": Section(
        "paper-budget-credit-dis-friction",
        "credit_dis_friction",
        "credit",
        "credit, the authors' settings with the friction learned as their code learns it",
        authors_settings=True,
    ),
    "funnel_friction": Section(
        "paper-budget-funnel-dis-friction",
        "funnel_dis_friction",
        "funnel",
        "funnel, the authors' settings with the friction learned as their code learns it",
        authors_settings=True,
    ),
}
TARGET_OF_STUDY = {s.study: s.target for s in SECTIONS.values()}
PAPER = {  # PAPER.md §6, DIS; credit with the N(0, 10^2) prior on the weights
    ("funnel", "Gaussian (learned)"): {"elbo": -0.296, "ess": 0.498},
    ("funnel", "GMP"): {"elbo": -0.058, "ess": 0.929, "delta_log_z": 0.019},
    ("credit", "Gaussian (learned)"): {"elbo": -585.247},
    ("credit", "GMP"): {"elbo": -585.223},
}
LOG_Z = {"funnel": 0.0, "credit": credit_log_z(10.0)}  # every ELBO's ceiling
BUDGET = 10_000
START_ITERATIONS = 1000  # the start that the JAX step's curve covers
START_YLIM = {"funnel": (-6.0, 0.0)}  # the start figure's ELBO range (default: all values)
BUDGET_YLIM = {"funnel": (-2.0, 0.0)}  # the whole-budget figure's (default: all values)


def _total(client: MlflowClient, record: TrialRecord, metric: str) -> float:
    """Sum of a per-evaluation metric over the trial's history (e.g. its CPU seconds)."""
    return sum(m.value for m in client.get_metric_history(record.run_id, metric))


def rows(client: MlflowClient, records: list[TrialRecord]) -> list[list[str]]:
    """One table row per (trial, metric the paper reports for its family), all of one target."""
    table = []
    for record in records:
        target = TARGET_OF_STUDY[record.study]
        family = f"{record.variant}, K = {record.k}" if record.k > 1 else record.variant
        paper = PAPER.get((target, record.variant), {"elbo": math.nan})
        hours = [_total(client, record, m) / 3600 for m in ("step_wall_s", "step_cpu_s")]
        for metric, value in paper.items():
            ours = record.final(metric)
            table.append(
                [
                    family,
                    metric,
                    f"{value:.3f}",
                    f"{ours:.3f}",
                    f"{ours - value:+.3f}",
                    f"{record.iterations:,} / {BUDGET:,}",
                    f"{hours[0]:.2f} / {hours[1]:.2f}",
                ]
            )
    return table


def figure(target: str, records: list[TrialRecord], path: Path) -> None:
    """ELBO against training iteration of one target's trials, the paper's values dashed and
    the target's log Z (the ceiling of any ELBO) dotted."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for record in records:
        steps, values = zip(*record.history.get("elbo", [(0, math.nan)]), strict=True)
        _plot_beside_paper(ax, target, record, steps, values)
    ax.axhline(LOG_Z[target], ls=":", color="black", label=f"log Z: {LOG_Z[target]:.3f}")
    # From the first tenth of the budget on (the start is far below), up to log Z.
    shown = [v for r in records for i, v in r.history.get("elbo", []) if i >= BUDGET // 10]
    shown += [v["elbo"] for (t, _), v in PAPER.items() if t == target] + [LOG_Z[target]]
    finite = [v for v in shown if math.isfinite(v)]
    bottom, top = min(finite), max(finite)
    margin = 0.05 * (top - bottom)
    ax.set_ylim(bottom - margin, top + margin)
    ax.set(title=f"{target}, DIS", xlabel="training iteration", ylabel="ELBO (2000 samples)")
    _save(fig, ax, path, legend_size=8)


def start_figure(
    target: str,
    records: list[TrialRecord],
    jax_curve: list[dict[str, float]],
    earlier: dict[str, list[TrialRecord]],
    path: Path,
) -> None:
    """A target's training ELBO over the first iterations: ours, the authors' JAX step (learned
    Gaussian, their defaults) and earlier runs (dashed), at equal iterations."""
    fig, ax = plt.subplots(figsize=(7, 4.5))

    def plot(record: TrialRecord, label: str, style: str) -> None:
        points = [(i, v) for i, v in record.history.get(TRAIN_ELBO, []) if i <= START_ITERATIONS]
        if points:
            ax.plot(*zip(*points, strict=True), style, label=label)

    for record in records:
        plot(record, f"ours: {record.variant}, K = {record.k}", "-o")
    for label, runs in earlier.items():
        for record in (r for r in runs if TARGET_OF_STUDY[r.study] == target):
            plot(record, f"ours, {label}: {record.variant}, K = {record.k}", "--")
    steps = [row["iteration"] for row in jax_curve if row["iteration"] <= START_ITERATIONS]
    values = [row["train_elbo"] for row in jax_curve][: len(steps)]
    ax.plot(steps, values, "k-s", label="authors' JAX step: Gaussian (learned)")
    ax.set(
        title=f"{target}, DIS: the first {START_ITERATIONS:,} iterations",
        xlabel="training iteration",
        ylabel="training ELBO (one batch)",
    )
    if target in START_YLIM:
        ax.set_ylim(*START_YLIM[target])
    _save(fig, ax, path, legend_size=7)


def budget_figure(
    target: str, records: list[TrialRecord], jax_curve: list[dict[str, float]], path: Path
) -> None:
    """A target's training ELBO over the whole budget, ours beside the authors' JAX step
    (learned Gaussian, their defaults), each point the mean of the last LAST_EVALUATIONS records
    up to its iteration (one batch each); the paper's values dashed."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for record in records:
        _plot_beside_paper(ax, target, record, *_trailing_means(record.history.get(TRAIN_ELBO, [])))
    jax_points = [(row["iteration"], row["train_elbo"]) for row in jax_curve]
    ax.plot(*_trailing_means(jax_points), "k-", label="authors' JAX step: Gaussian (learned)")
    ax.set_ylim(*BUDGET_YLIM.get(target, ax.get_ylim()))
    ax.set(
        title=f"{target}, DIS: the whole budget beside the authors' step",
        xlabel="training iteration",
        ylabel=f"training ELBO, mean of the last {LAST_EVALUATIONS} records",
    )
    _save(fig, ax, path, legend_size=7)


def _trailing_means(points: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    """(iterations, the mean of the last LAST_EVALUATIONS values up to each), from the
    LAST_EVALUATIONS-th point on."""
    values = [value for _, value in points]
    means = [
        sum(values[i + 1 - LAST_EVALUATIONS : i + 1]) / LAST_EVALUATIONS
        for i in range(LAST_EVALUATIONS - 1, len(values))
    ]
    return [step for step, _ in points[LAST_EVALUATIONS - 1 :]], means


def _plot_beside_paper(
    ax: plt.Axes, target: str, record: TrialRecord, steps: Sequence[int], values: Sequence[float]
) -> None:
    """One trial's curve and, dashed in its colour, the paper's ELBO for its prior family."""
    line = ax.plot(steps, values, label=f"ours: {record.variant}, K = {record.k}")[0]
    paper = PAPER.get((target, record.variant), {}).get("elbo")
    if paper is not None:
        ax.axhline(paper, ls="--", color=line.get_color(), label=f"paper: {paper}")


def _save(fig: plt.Figure, ax: plt.Axes, path: Path, legend_size: int) -> None:
    """Add the legend, write the figure to `path` and close it."""
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _records(root: str) -> tuple[MlflowClient, set[str], list[TrialRecord]]:
    """The MLflow client of a records folder, its experiments and the paper-budget trials."""
    client = MlflowClient(StudyPaths(Path(root)).mlflow_uri)
    known = {e.name for e in client.search_experiments()}
    return client, known, collect(client, [s for s in TARGET_OF_STUDY if s in known])


def _marker(key: str, end: bool = False) -> str:
    return f"<!-- {'end' if end else 'section'}: {key} -->"


def kept_sections(page: Path) -> dict[str, str]:
    """Each section of an existing page, markers included (section key -> text)."""
    text = page.read_text() if page.is_file() else ""
    sections = {}
    for key in SECTIONS:
        begin, end = text.find(_marker(key)), text.find(_marker(key, end=True))
        if 0 <= begin < end:
            sections[key] = text[begin : end + len(_marker(key, end=True))]
    return sections


def finish_status(unfinished: int, runs: int) -> str:
    """The sentence above a section's table: whether its runs reached the budget."""
    if unfinished:
        return (
            f"**In progress:** {unfinished} of {runs} runs have not reached {BUDGET:,} "
            "iterations (see the iterations column); their rows are interim values.\n\n"
        )
    every = "The run" if runs == 1 else "Both runs" if runs == 2 else f"All {runs} runs"
    return f"{every} reached {BUDGET:,} iterations.\n\n"


def section(key: str, client: MlflowClient, records: list[TrialRecord], figures: str) -> str:
    """One study's section: its status, its table and its figures (Markdown)."""
    header = ["prior", "metric", "paper", "ours", "ours − paper", "iterations", "wall / CPU h"]
    table = [header, ["---"] * len(header), *rows(client, records)]
    status = finish_status(sum(r.iterations < BUDGET for r in records), len(records))
    return (
        f"{_marker(key)}\n## {SECTIONS[key].title}\n\n{status}"
        + "\n".join("| " + " | ".join(row) + " |" for row in table)
        + f"\n\n{figures}{_marker(key, end=True)}"
    )


def main() -> None:
    """Read the records under --root, rewrite the sections of the targets found there (the
    others stay as the page has them) and their figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the records folder the studies ran in")
    parser.add_argument("--out", default="docs/paper_budget.md")
    parser.add_argument(
        "--jax-curve",
        nargs="*",
        default=[],
        metavar="TARGET=FILE",
        help="the JAX step's curve for TARGET (bench.jax_dis_step --curve)",
    )
    parser.add_argument("--earlier", nargs="*", default=[], metavar="ROOT=LABEL")
    args = parser.parse_args()
    client, _, records = _records(args.root)
    earlier = {}
    for item in args.earlier:
        root, _, label = item.partition("=")
        earlier[label or root] = _records(root)[2]
    jax_curves = {}
    for item in args.jax_curve:
        target, _, file = item.partition("=")
        jax_curves[target] = json.loads(Path(file).read_text())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sections = kept_sections(out)
    for key, part in SECTIONS.items():
        found = [r for r in records if r.study == part.study]
        if not found:
            empty = f"{_marker(key)}\n## {part.title}\n\nNot run yet.\n"
            sections.setdefault(key, empty + _marker(key, end=True))
            continue
        elbo_figure = f"paper_budget_{key}.png"
        figure(part.target, found, out.parent / elbo_figure)
        figures = f"![{part.title}: ELBO against iteration]({elbo_figure})\n\n"
        if part.target in jax_curves:
            start = f"paper_budget_{key}_start.png"
            start_figure(part.target, found, jax_curves[part.target], earlier, out.parent / start)
            figures += (
                f"![The first {START_ITERATIONS:,} iterations beside the authors' step]"
                f"({start})\n\n"
            )
            curve = jax_curves[part.target]
            if part.authors_settings and curve[-1]["iteration"] >= BUDGET:
                whole = f"paper_budget_{key}_budget.png"
                budget_figure(part.target, found, curve, out.parent / whole)
                figures += f"![The whole budget beside the authors' step]({whole})\n\n"
        sections[key] = section(key, client, found, figures)
    commands = "\n".join(
        f"    gmp study run examples/paper_budget/{part.file}.yaml --root ROOT"
        for part in SECTIONS.values()
    )
    out.write_text(
        "# The paper's numbers at the paper's budget\n\n"
        "DIS, batch 2000 (funnel) or 1000 (credit, with the N(0, 10^2) prior on the weights), "
        "N = 128, width 128, 10,000 iterations, the authors' optimiser settings; ours is the "
        f"mean of the last {LAST_EVALUATIONS} of 100 evaluations on 2000 samples, as in the "
        "paper. Made by\n\n"
        f"{commands}\n    python -m experiments.paper_budget --root ROOT "
        "--jax-curve funnel=jax_funnel.json credit=jax_credit.json\n\n"
        "The figures of the first iterations draw the authors' DIS step in JAX beside ours "
        "(learned Gaussian, their defaults); its curves come from `python -m bench.jax_dis_step "
        "--target funnel --no-target-score --authors --curve 10000 --checkpoint jax_funnel.npz "
        "> jax_funnel.json` (the whole budget, drawn beside ours in a figure of its own; a "
        "stopped run continues from its checkpoint) and `python -m bench.jax_dis_step --target "
        "credit --prior-scale 10 --no-target-score --authors --curve 1000 > jax_credit.json` "
        "(JAX is not a dependency of gmp: bench/jax_dis_step.py says how to install it). "
        "The last command rewrites the section of each study it finds under ROOT and keeps "
        "the other sections as they are, so studies may run at different times or on "
        "different machines. Why the numbers differ from the paper's: "
        "[results_discussion.md](results_discussion.md#the-paper-budget).\n\n"
        + "\n\n".join(sections[key] for key in SECTIONS)
        + "\n"
    )
    print(out.read_text())


if __name__ == "__main__":
    main()
