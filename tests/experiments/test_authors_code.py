"""Reading the evaluation lines of the authors' public code."""

from pathlib import Path

import pytest

from experiments.authors_code import evaluations, milestone_row

LOG = """\
[2026-12-06 16:06:58,184][jax._src.xla_bridge][INFO] - Unable to initialize backend 'cuda':
Step 0: Loss: inf; ELBO -3.678926467895508; Δ lnZ -1.0763492584228516; reverse_ESS 0.0691
Step 100: Loss: 2.1495752334594727; ELBO -2.11337; Δ lnZ -0.97942; reverse_ESS 0.05436
Step 199: Loss: 1.841807246208191; ELBO -1.93160; Δ lnZ -0.73531; reverse_ESS 0.00574
"""


def test_every_evaluation_line_is_read_and_the_rest_skipped(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text(LOG, encoding="utf-8")
    rows = evaluations(log)
    assert rows == [
        (0, -3.678926467895508, 0.0691),
        (100, -2.11337, 0.05436),
        (199, -1.9316, 0.00574),
    ]
    # the last evaluation at iteration iters - 1 stands for the milestone iters
    assert milestone_row(rows, 100) == ["100: -2.113 / 0.05", "200: -1.932 / 0.01"]


def test_a_log_without_evaluations_names_the_file(tmp_path: Path) -> None:
    log = tmp_path / "empty.log"
    log.write_text("Error executing job\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"empty\.log"):
        evaluations(log)
