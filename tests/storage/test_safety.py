"""Secrets and paths: URL passwords are redacted, names that would leave the records are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from storage.layout import StudyPaths
from storage.optuna_storage import PASSWORD_ENV, password_to_env, redact
from storage.tracking import credentials_to_env


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("postgresql+psycopg://gmp:s3cret@db:5432/gmp", "postgresql+psycopg://gmp:***@db:5432/gmp"),
        ("http://u:p%40ss/w@127.0.0.1:5000", "http://u:***@127.0.0.1:5000"),
        ("postgresql://gmp:p@ss@db/gmp", "postgresql://gmp:***@db/gmp"),  # raw '@' in it
        ("sqlite:////runs/optuna.db", "sqlite:////runs/optuna.db"),
        ("http://user@host:5000/x", "http://user@host:5000/x"),  # no password
        (
            'storage:\n  mlflow_uri: "https://a:b1@mlflow:443/"\n  optuna_url: postgresql://c:d2@pg/x\n',
            'storage:\n  mlflow_uri: "https://a:***@mlflow:443/"\n  optuna_url: postgresql://c:***@pg/x\n',
        ),
    ],
    ids=["postgres", "encoded", "raw at", "sqlite", "user only", "study file"],
)
def test_redact_hides_every_url_password(text, redacted):
    assert redact(text) == redacted


def unset_for_this_test(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Unset environment variables `names`; whatever the test sets them to is undone after it
    (a plain delenv of an unset variable would leave the test's values behind in this process,
    and the Ray nodes a later test starts would inherit them)."""
    for name in names:
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_tracking_credentials_move_from_the_url_to_mlflows_variables(monkeypatch):
    unset_for_this_test(monkeypatch, "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    for unchanged in ("http://127.0.0.1:5000", "https://user@host", "sqlite:////r/mlflow.db"):
        assert credentials_to_env(unchanged) == unchanged
    assert "MLFLOW_TRACKING_PASSWORD" not in os.environ
    assert credentials_to_env("https://gmp:p%40ss@mlflow:8443/x") == "https://mlflow:8443/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "gmp"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss"


def test_an_optuna_postgres_password_moves_from_the_url_to_libpqs_variable(monkeypatch, caplog):
    unset_for_this_test(monkeypatch, PASSWORD_ENV)
    for unchanged in ("sqlite:////r/optuna.db", "journal:///r/j.log", "postgresql://gmp@db/x"):
        assert password_to_env(unchanged) == unchanged
    assert PASSWORD_ENV not in os.environ
    url = "postgresql+psycopg://gmp:p@ss@db:5432/gmp?sslmode=require"
    assert password_to_env(url) == "postgresql+psycopg://gmp@db:5432/gmp?sslmode=require"
    assert os.environ[PASSWORD_ENV] == "p@ss"
    # one process, one libpq password: a URL with another keeps its own, and the user is told
    assert password_to_env("postgresql://other:x@db2/y") == "postgresql://other:x@db2/y"
    assert "postgresql://other:***@db2/y" in caplog.text and ":x@" not in caplog.text
    assert password_to_env("postgresql://u:p%40ss@db3/z") == "postgresql://u@db3/z"


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", "", "a\\b", "x..y"])
def test_a_study_name_that_would_leave_the_root_names_no_folder(name):
    paths = StudyPaths(Path("runs"))
    with pytest.raises(ValueError, match="cannot name a folder"):
        paths.experiment_dir(name)
    with pytest.raises(ValueError, match="cannot name a folder"):
        paths.study_artifacts(name)


def test_an_artifact_path_with_parent_steps_is_refused_and_writes_nothing(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    store = tmp_path / "artifacts"
    experiment = client.create_experiment("safe", artifact_location=store.as_uri())
    run = client.create_run(experiment).info.run_id
    file = tmp_path / "study.yaml"
    file.write_text("name: safe\n")
    with pytest.raises(MlflowException, match="Invalid artifact path"):
        client.log_artifact(run, str(file), artifact_path="../../escape")
    assert not list(tmp_path.glob("**/escape"))
    client.log_artifact(run, str(file), artifact_path="study")
    assert [f.path for f in client.list_artifacts(run, "study")] == ["study/study.yaml"]
