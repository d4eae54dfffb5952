"""The `gmp` command line, run as a user runs it (a real subprocess), or in-process through
`main` where only exit codes and messages are checked.

Each `gmp` process pays the import of torch, Ray and MLflow (seconds each), so tests that start
several are marked slow (they run in CI).
"""

import os
import socket
import subprocess
import sys

import pytest

import targets
import trainers
from orchestrator.cli import main
from tests.e2e.conftest import study_file

GMP = [sys.executable, "-m", "orchestrator.cli"]


def test_targets_lists_every_target_with_its_facts():
    result = subprocess.run(
        [*GMP, "targets"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in targets.names():
        assert any(line.split("│")[1].strip() == name for line in lines if "│" in line), name
    funnel = next(line for line in lines if "│ funnel " in line)
    assert [cell.strip() for cell in funnel.split("│")[2:6]] == ["10 (any >= 2)", "yes", "yes", "-"]


@pytest.mark.slow
def test_unknown_command_and_help_exit_codes(capsys):
    assert subprocess.run([*GMP, "nope"], capture_output=True, timeout=60).returncode == 2
    # Help texts in-process: the same parser, without a process (and torch's import) each.
    for args in ([], ["study"], ["study", "run"], ["train"], ["ui"], ["report"], ["export"]):
        with pytest.raises(SystemExit) as stop:
            main([*args, "--help"])
        assert stop.value.code == 0 and "usage: gmp" in capsys.readouterr().out


@pytest.mark.slow
def test_a_binary_study_file_exits_2_with_a_message_and_writes_nothing(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_bytes(bytes(range(256)) * 4)
    for command in (["study", "run"], ["train"]):
        result = subprocess.run(
            [*GMP, *command, str(study)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert result.returncode == 2, result.stderr
        assert "study.yaml: invalid study file" in result.stderr
        assert "not a text file" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]


def test_commands_on_a_folder_without_records_exit_2_naming_it_and_create_nothing(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    for command in (
        ["study", "status", "nothing"],
        ["study", "list"],
        ["report", "nothing", "--out", "report"],
        ["export", "nothing", "--out", "best"],
    ):
        assert main(command) == 2, command
        assert f"no gmp records in {(tmp_path / 'gmp-runs').resolve()}/" in capsys.readouterr().err
        assert list(tmp_path.iterdir()) == [], command


@pytest.mark.slow
@pytest.mark.parametrize("option", ["--port", "--dashboard-port"])
def test_ui_on_a_taken_port_exits_1_naming_it(tmp_path, option):
    (tmp_path / "gmp-runs").mkdir()
    (tmp_path / "gmp-runs" / "mlflow.db").touch()
    (tmp_path / "gmp-runs" / "optuna.db").touch()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*GMP, "ui", option, str(port)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
    assert result.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in result.stderr
    assert f"choose another with {option}" in result.stderr


@pytest.mark.slow
def test_train_takes_any_trainer_setting_an_iteration_count_and_saves_the_sampler(tmp_path):
    study = study_file(tmp_path, name="train-cli")
    out = tmp_path / "model"
    result = subprocess.run(
        [
            *GMP, "train", str(study),
            "--set", "prior.k_max=3", "--set", "sampler=cmcd", "--set", "optim.lr_prior=0.02",
            "--iterations", "4", "--out", str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", "GMP_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("training train-cli (cmcd, gmm40) for 4 iterations")
    assert lines[0].endswith("(1 CPU thread; set GMP_THREADS to change)")
    assert any(line.startswith("iteration      4/4") for line in lines)
    trained = trainers.load(out)
    assert trained.iteration == 4 and trained.config.sampler == "cmcd"
    assert trained.config.prior.k_max == 3 and trained.config.optim.lr_prior == 0.02
    x, log_w = trained.sample(5)
    assert x.shape == (5, 2) and log_w.shape == (5,)

    bad = subprocess.run(
        [*GMP, "train", str(study), "--set", "optim.no_such_rate=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2, bad.stderr
    assert "optim.no_such_rate: Extra inputs are not permitted" in bad.stderr

    for variable, value, message in (
        ("GMP_THREADS", "many", "GMP_THREADS='many': expected a whole number >= 1"),
        ("GMP_NATIVE", "fast", "GMP_NATIVE must be one of auto, 1, 0, got 'fast'"),
    ):
        bad_setting = subprocess.run(
            [*GMP, "train", str(study), "--iterations", "1"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, variable: value},
        )
        assert bad_setting.returncode == 2, bad_setting.stderr
        assert message in bad_setting.stderr
