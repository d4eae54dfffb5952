"""The study's terminal table: plain columns, full values, fitted to the terminal's width."""

from orchestrator.progress import format_value, render_table

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
