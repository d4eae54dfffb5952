"""Helpers for end-to-end studies: small study files written into a temporary root."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

SMALL_STUDY: dict[str, Any] = {
    "name": "e2e",
    "target": {"name": "gmm40", "kwargs": {"dim": 2, "n_modes": 4, "half_width": 8.0}},
    "sampler": "dis",
    "fixed": {
        "batch_size": 64,
        "eval_samples": 256,
        "time": {"n_steps": 8, "init_dt": 0.3},
        "network": {"hidden": 16, "n_time_features": 8},
        "prior": {"init_std": 3.0},
        "imr": {"interval": 10, "mala": {"n_chains": 8, "n_steps": 20, "step_size": 0.3}},
    },
    "search_space": {
        "prior.k_max": {"type": "categorical", "choices": [1, 3]},
        "imr.enabled": {"type": "categorical", "choices": [False, True]},
        "optim.lr_network": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
    },
    "objective": {"metric": "elbo", "direction": "maximize"},
    "budget": {"trials": 4, "iterations": 30, "eval_interval": 10},
    "concurrency": 2,
    "resources": {"cpus": 0.5, "imr_task_cpus": 0.5, "imr_parallel_tasks": 1},
    "failures": {"max_failures": 1},
}

# One mixture component and no IMR: an evaluation takes a fraction of a second.
FAST: dict[str, Any] = {
    "fixed": {**SMALL_STUDY["fixed"], "prior": {"init_std": 3.0, "k_max": 1}},
    "search_space": {"optim.lr_network": {"type": "float", "low": 1e-3, "high": 1e-2}},
    "search": {"algorithm": "random"},
}
"""Top-level changes of SMALL_STUDY for studies whose trials must be quick (fault tests)."""


def study_file(folder: Path, **changes: Any) -> Path:
    """Write SMALL_STUDY with top-level `changes` into folder/<name>.yaml."""
    data = copy.deepcopy(SMALL_STUDY)
    data.update(changes)
    path = folder / f"{data['name']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    """An empty records root for one test."""
    root = tmp_path / "runs"
    root.mkdir()
    return root
