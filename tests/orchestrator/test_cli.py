"""The `gmp` command line, run as a user runs it (a real subprocess)."""

import os
import subprocess
import sys

import targets

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


def test_unknown_command_and_help_exit_codes():
    assert subprocess.run([*GMP, "nope"], capture_output=True, timeout=60).returncode == 2
    for args in ([], ["study"], ["study", "run"], ["train"], ["ui"], ["report"], ["export"]):
        result = subprocess.run([*GMP, *args, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "usage: gmp" in result.stdout


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
