"""The study's live table in the terminal, as a Ray Tune progress reporter.

One row per trial: its number, prior family, active components, iterations done of the budget,
the objective, ESS (and EMC where the target has modes) and its state. In a terminal the table
is redrawn in place; piped (a log file, CI) a new table is printed at most every
PIPED_INTERVAL_S seconds, and only when something changed, so the log stays short; every value
is printed in full.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from ray.tune import ProgressReporter

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

PIPED_INTERVAL_S = 30.0  # piped: at most one table per this many seconds, except at the end
LIVE_INTERVAL_S = 1.0  # terminal: redraw at most this often
STATES = {
    "PENDING": "pending",
    "RUNNING": "running",
    "PAUSED": "paused",
    "TERMINATED": "done",
    "ERROR": "error",
}


def format_value(value: Any) -> str:
    """A metric as at most 4 significant digits and never cut short: -0.01234, 1.2e+04, -."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "nan"
        return f"{value:.4g}"
    return str(value)


def render_table(
    header: list[str], rows: list[list[str]], width: int, optional: tuple[str, ...] = ()
) -> list[str]:
    """Plain-text columns (no box drawing) fitted into `width`: where the table is wider, the
    columns named in `optional` are dropped, last first, until it fits."""
    columns = list(range(len(header)))
    droppable = [c for c in columns if header[c] in optional]
    while True:
        widths = [max([len(header[c]), *(len(r[c]) for r in rows)]) for c in columns]
        if sum(widths) + 2 * (len(columns) - 1) <= width or not droppable:
            break
        columns.remove(droppable.pop())

    def line(cells: list[str]) -> str:
        return "  ".join(cells[c].ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


class StudyReporter(ProgressReporter):
    """Ray Tune's progress reporter for a study: one concise, width-aware table.

    `family(config)` names a trial's prior family from its sampled values; `numbers()` maps
    Tune trial ids to Optuna trial numbers (as far as known); `metrics` are the columns after
    the objective (e.g. ESS, EMC)."""

    def __init__(
        self,
        *,
        study: str,
        objective: str,
        iterations: int,
        trials: int,
        metrics: list[str],
        family: Callable[[dict[str, Any]], str],
        numbers: Callable[[], dict[str, int]],
        out: TextIO | None = None,
    ) -> None:
        self.study = study
        self.objective = objective
        self.iterations = iterations
        self.trials = trials
        self.metrics = metrics
        self.family = family
        self.numbers = numbers
        self.out = out
        self._reset()

    def _reset(self) -> None:
        self._families: dict[str, str] = {}
        self._numbers: dict[str, int] = {}
        self._shown: tuple[Any, ...] | None = None
        self._printed_at = -float("inf")
        self._drawn_lines = 0

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles the reporter with the experiment: no stream, no drawing state."""
        state = self.__dict__.copy()
        state["out"] = None
        return state

    def setup(self, *args: Any, **kwargs: Any) -> None:
        """A new (or resumed) run: forget what was drawn."""
        self._reset()

    @property
    def _stream(self) -> TextIO:
        return self.out or sys.stdout

    def _live(self) -> bool:
        return self._stream.isatty()

    def should_report(self, trials: list[Trial], done: bool = False) -> bool:
        """Report when a trial's state or iteration changed: live at most every LIVE_INTERVAL_S,
        piped at most every PIPED_INTERVAL_S, and at the end unless the last table is final."""
        now = time.monotonic()
        interval = LIVE_INTERVAL_S if self._live() else PIPED_INTERVAL_S
        key = tuple((t.trial_id, t.status, self._iteration(t)) for t in trials)
        if key == self._shown or (now - self._printed_at < interval and not done):
            return False
        self._shown = key
        return True

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        """Print (or redraw) the table."""
        self._printed_at = time.monotonic()
        width = shutil.get_terminal_size((100, 24)).columns if self._live() else 100
        lines = self.table(trials, width)
        stream = self._stream
        if self._live() and self._drawn_lines:
            stream.write(f"\x1b[{self._drawn_lines}F\x1b[J")  # back to the table's top
        stream.write("\n".join(lines) + "\n")
        stream.flush()
        self._drawn_lines = len(lines) if self._live() and not done else 0

    def table(self, trials: list[Trial], width: int) -> list[str]:
        """The study's title line and its trials table, fitted into `width` columns."""
        unknown = [t for t in trials if t.trial_id not in self._numbers]
        if unknown:
            self._numbers.update(self.numbers())
        header = ["trial", "family", "K", "iteration", self.objective, *self.metrics, "state"]
        rows = [self._row(t) for t in sorted(trials, key=self._order)]
        finished = sum(t.status in ("TERMINATED", "ERROR") for t in trials)
        title = f"study {self.study}: {finished}/{self.trials} trials finished"
        optional = ("K", *self.metrics)  # dropped, last first, where the table is too wide
        return [title, *render_table(header, rows, width, optional)]

    def _order(self, trial: Trial) -> tuple[int, str]:
        return self._numbers.get(trial.trial_id, 1 << 30), trial.trial_id

    def _row(self, trial: Trial) -> list[str]:
        result = trial.last_result or {}
        if trial.trial_id not in self._families:
            self._families[trial.trial_id] = self.family(dict(trial.config))
        number = self._numbers.get(trial.trial_id)
        return [
            str(number) if number is not None else trial.trial_id,
            self._families[trial.trial_id],
            format_value(result.get("active_k")),
            f"{self._iteration(trial)}/{self.iterations}",
            format_value(result.get(self.objective)),
            *(format_value(result.get(m)) for m in self.metrics),
            self._state(trial),
        ]

    @staticmethod
    def _iteration(trial: Trial) -> int:
        return int((trial.last_result or {}).get("iteration", 0))

    def _state(self, trial: Trial) -> str:
        if trial.status == "TERMINATED" and self._iteration(trial) < self.iterations:
            return "stopped early"
        return STATES.get(trial.status, trial.status.lower())
