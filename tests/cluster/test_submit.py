"""`gmp study submit` before any cluster is involved, and `gmp study status` on shared URLs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, main
from orchestrator.driver import OPTUNA_URL_ENV, register_study
from orchestrator.spec import load_spec
from orchestrator.submit import PACKAGES, cluster_root, stage_job
from storage.optuna_storage import open_storage
from tests.cluster.conftest import free_port
from tests.e2e.conftest import study_file
from tests.user_targets import MODULE, write_module, write_study


def test_staged_job_ships_the_packages_and_the_study_file_and_runs_that_code(tmp_path):
    file = study_file(tmp_path, name="staged")
    stage = tmp_path / "stage"
    stage.mkdir()
    request = stage_job(load_spec(file), file, stage)

    assert sorted(p.name for p in stage.iterdir()) == sorted([*PACKAGES, "study"])
    assert (stage / "study" / "staged.yaml").read_text() == file.read_text()
    assert (stage / "orchestrator" / "submit.py").is_file()
    assert not list(stage.rglob("__pycache__")) and not list(stage.rglob("*.pyc"))
    assert request.runtime_env == {"working_dir": str(stage)}
    assert request.metadata == {"gmp.study": "staged", "gmp.file": "staged.yaml"}
    assert request.entrypoint == (
        "python -m orchestrator.cli study run study/staged.yaml --address auto "
        '--root "$HOME"/gmp-runs'
    )
    # In the job's working folder, the shipped copy of the code wins over an installed one.
    found = subprocess.run(
        [sys.executable, "-c", "import orchestrator; print(orchestrator.__file__)"],
        cwd=stage, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(found.stdout.strip()) == stage / "orchestrator" / "__init__.py"


def test_a_target_module_beside_the_study_file_is_shipped_at_the_jobs_top(fresh_imports):
    folder = fresh_imports / "study"
    folder.mkdir()
    module = write_module(folder)
    file = write_study(folder)
    stage = fresh_imports / "stage"
    stage.mkdir()
    stage_job(load_spec(file), file, stage)
    assert sorted(p.name for p in stage.iterdir()) == sorted([*PACKAGES, "study", f"{MODULE}.py"])
    assert (stage / module.name).read_text() == module.read_text()


def test_records_folder_on_the_cluster_is_under_home_unless_absolute(tmp_path):
    spec = load_spec(study_file(tmp_path))
    assert cluster_root(spec, None) == '"$HOME"/gmp-runs'
    assert cluster_root(spec, "runs/a b") == "\"$HOME\"/'runs/a b'"
    assert cluster_root(spec, "/srv/gmp runs") == "'/srv/gmp runs'"


def test_a_study_file_with_a_url_password_is_not_submitted(tmp_path, capsys):
    url = "postgresql+psycopg://gmp:hunter2@db.internal:5432/optuna"
    file = study_file(tmp_path, storage={"optuna_url": url})
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens: a submission would fail (1)
    assert main(["study", "submit", str(file), "--address", closed]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    line = 1 + file.read_text().splitlines().index(
        next(s for s in file.read_text().splitlines() if "optuna_url" in s)
    )
    assert f"{file}, line {line}: a URL with a password" in err and "GMP_OPTUNA_URL" in err
    assert "hunter2" not in err and "gmp:***@db.internal" in err


def test_an_unreachable_dashboard_is_a_failure_naming_the_address(tmp_path, capsys):
    closed = f"http://127.0.0.1:{free_port()}"
    assert main(["study", "submit", str(study_file(tmp_path)), "--address", closed]) == EXIT_FAILURE
    assert f"Failed to connect to Ray at address: {closed}" in capsys.readouterr().err


def test_status_reads_the_storage_named_by_the_file_or_the_environment(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'shared' / 'optuna.db'}"
    file = study_file(tmp_path, name="shared", storage={"optuna_url": url})
    register_study(load_spec(file), open_storage(url))
    empty_root = ["--root", str(tmp_path / "nothing-here")]

    assert main(["study", "status", str(file), *empty_root]) == EXIT_OK
    assert "study shared: 0/4 trials" in capsys.readouterr().out
    with pytest.MonkeyPatch.context() as env:
        env.delenv(OPTUNA_URL_ENV, raising=False)
        assert main(["study", "status", "shared", *empty_root]) == EXIT_BAD_INPUT
        assert f"no gmp records in {tmp_path / 'nothing-here'}/" in capsys.readouterr().err
        assert not (tmp_path / "nothing-here").exists()
        env.setenv(OPTUNA_URL_ENV, url)
        assert main(["study", "status", "shared", *empty_root]) == EXIT_OK
        assert "study shared: 0/4 trials" in capsys.readouterr().out
