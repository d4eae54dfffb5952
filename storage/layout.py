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
    def mlflow_uri(self) -> str:
        """Default MLflow backend store: one SQLite file for all studies of this root."""
        return f"sqlite:///{(self.root / 'mlflow.db').resolve()}"

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
        return self.tune_dir / study
