"""Where a study's records live under the local root (default `./gmp-runs/`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StudyPaths:
    """Every path a study writes under one root; nothing outside it is written."""

    root: Path

    @property
    def optuna_url(self) -> str:
        """Default Optuna storage: one SQLite file for all studies of this root."""
        return f"sqlite:///{(self.root / 'optuna.db').resolve()}"

    @property
    def mlflow_store(self) -> Path:
        """Default MLflow backend store: one SQLite file for all studies of this root."""
        return (self.root / "mlflow.db").resolve()

    @property
    def mlflow_uri(self) -> str:
        """The default MLflow backend store's URI."""
        return f"sqlite:///{self.mlflow_store}"

    @property
    def mlflow_artifacts(self) -> Path:
        """Default MLflow artifact folder."""
        return (self.root / "mlartifacts").resolve()

    @property
    def tune_dir(self) -> Path:
        """Ray Tune's storage path (one experiment folder per study)."""
        return (self.root / "tune").resolve()

    def experiment_dir(self, study: str) -> Path:
        """Tune's experiment folder of `study`."""
        return self.tune_dir / folder_name(study)

    def study_artifacts(self, study: str) -> Path:
        """Default MLflow artifact folder of `study`."""
        return self.mlflow_artifacts / folder_name(study)


def folder_name(study: str) -> str:
    """`study` when it is safe as one folder name under the root; ValueError naming it if not."""
    if study in ("", ".") or ".." in study or "/" in study or "\\" in study:
        raise ValueError(f"study name {study!r} cannot name a folder: no '/', '\\' or '..' allowed")
    return study
