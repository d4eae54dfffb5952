"""Test-wide settings: data from the shared folder when GMP_DATA_DIR is not set; records roots
that start with an empty MLflow store."""

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from storage.layout import StudyPaths

_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "GMP_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["GMP_DATA_DIR"] = str(_SHARED_DATA)

# One torch thread per test process: on a 2-core machine shared with Ray workers and other
# processes, two threads per process slow everything down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture
def fresh_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The test's folder for user target modules: the import path, and the modules imported
    from that folder, are as before once the test ends."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store as MLflow creates it (its schema migrations take seconds;
    copies of it save each study test that time)."""
    paths = StudyPaths(tmp_path_factory.mktemp("mlflow-template"))
    MlflowClient(paths.mlflow_uri).search_experiments()
    store = paths.mlflow_store
    assert store.is_file() and not store.with_name(f"{store.name}-wal").exists()
    return store


def records_root(folder: Path, template: Path) -> Path:
    """folder/runs: a records root whose MLflow store exists but holds no study."""
    root = folder / "runs"
    root.mkdir()
    shutil.copyfile(template, StudyPaths(root).mlflow_store)
    return root
