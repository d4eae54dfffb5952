"""The study's terminal table: plain columns, full values, fitted to the terminal's width."""

import io

from ray.tune.experiment import Trial

from orchestrator.progress import StudyReporter, format_value, render_table

HEADER = ["trial", "family", "K", "iteration", "elbo", "ess", "emc", "state"]
ROWS = [
    ["0", "Gaussian (learned)", "1", "600/600", "-1.134", "0.1313", "0.8267", "done"],
    ["12", "GMP K=10 +IMR", "6", "300/600", "-0.01234", "0.0021", "-", "stopped early"],
]


def test_values_are_never_cut_short():
    assert format_value(-0.0123456) == "-0.01235"
    assert format_value(-12345.678) == "-1.235e+04"
    assert format_value(None) == "-" and format_value(float("nan")) == "nan"
    assert format_value(3) == "3"


def test_a_wide_terminal_shows_every_column_without_box_drawing():
    lines = render_table(HEADER, ROWS, 120, optional=("K", "ess", "emc"))
    assert lines[0].split() == HEADER
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[3].split() == ["12", "GMP", "K=10", "+IMR", "6", "300/600", "-0.01234",
                                "0.0021", "-", "stopped", "early"]  # fmt: skip
    assert not any(c in "".join(lines) for c in "│┃╭━…")


def test_a_narrow_terminal_drops_optional_columns_last_first():
    lines = render_table(HEADER, ROWS, 66, optional=("K", "ess", "emc"))
    assert lines[0].split() == ["trial", "family", "K", "iteration", "elbo", "state"]
    assert max(len(line) for line in lines) <= 66
    lines = render_table(HEADER, ROWS, 40, optional=("K", "ess", "emc"))
    assert lines[0].split() == ["trial", "family", "iteration", "elbo", "state"]
    assert "-0.01234" in lines[3]  # still whole, even where the table cannot fit


def _trial(trial_id: str, k_max: int, status: str, result: dict) -> Trial:
    trial = Trial("GMPTrainable", config={"prior.k_max": k_max}, trial_id=trial_id, stub=True)
    trial.set_status(status)
    trial.run_metadata.last_result = result
    return trial


def test_the_study_table_names_families_progress_and_early_stops_piped():
    out = io.StringIO()
    reporter = StudyReporter(
        study="demo",
        objective="elbo",
        iterations=600,
        trials=3,
        metrics=["ess", "emc"],
        family=lambda config: "GMP K=10" if config["prior.k_max"] > 1 else "Gaussian (learned)",
        numbers=lambda: {"a_00000": 0, "a_00001": 1, "a_00002": 2},
        out=out,
    )
    trials = [
        _trial("a_00001", 10, Trial.TERMINATED, {"iteration": 300, "elbo": -0.0123456}),
        _trial("a_00000", 1, Trial.TERMINATED, {"iteration": 600, "elbo": -1.5, "active_k": 1}),
        _trial("a_00002", 10, Trial.PENDING, {}),
    ]
    assert reporter.should_report(trials)
    reporter.report(trials, done=False)
    assert not reporter.should_report(trials)  # nothing changed: no second table
    assert reporter.should_report(trials, done=True) is False  # the last table is final
    lines = out.getvalue().splitlines()
    assert lines[0] == "study demo: 2/3 trials finished"
    assert [line.split()[0] for line in lines[3:]] == ["0", "1", "2"]
    assert lines[3].split()[-6:] == ["1", "600/600", "-1.5", "-", "-", "done"]
    assert "300/600" in lines[4] and "-0.01235" in lines[4] and lines[4].endswith("stopped early")
    assert lines[5].endswith("pending") and "\x1b" not in out.getvalue()


def test_a_table_without_rows_is_its_header():
    assert render_table(HEADER, [], 80)[0].split() == HEADER
