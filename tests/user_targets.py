"""A user's target module and study file, written where a test wants them (no package edits)."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import yaml

MODULE = "user_targets_demo"
"""Name of the module `write_module` writes."""

SCALE, DIM = 2.0, 3
LOG_Z = DIM * math.log(math.sqrt(2 * math.pi) * SCALE)
"""log of the integral of exp(-|x|^2 / (2 SCALE^2)) over R^DIM: the known answer."""

SOURCE = '''
"""Targets of one's own, outside the gmp package."""

import math

from targets import Target


class ScaledGaussian(Target):
    """N(0, scale^2 I) without its normaliser."""

    def __init__(self, dim, scale):
        super().__init__()
        self.name, self.dim, self.scale = "scaled_gaussian", dim, scale
        self.log_Z = dim * math.log(math.sqrt(2 * math.pi) * scale)

    def log_prob(self, x):
        return -0.5 * (x / self.scale).square().sum(dim=-1)


def scaled_gaussian(dim: int = 3, scale: float = 2.0):
    """An isotropic Gaussian whose log normaliser is known."""
    return ScaledGaussian(dim, scale)


def not_a_target(dim: int = 3):
    return {"dim": dim}


def wrong_dimension(dim: int = 3):
    return ScaledGaussian(dim + 1, 2.0)


class PerCoordinate(ScaledGaussian):
    def log_prob(self, x):
        return -0.5 * (x / self.scale).square()


def per_coordinate(dim: int = 3):
    return PerCoordinate(dim, 2.0)


not_callable = 42
'''

STUDY: dict[str, Any] = {
    "name": "user-target",
    "target": {"name": f"{MODULE}:scaled_gaussian", "kwargs": {"dim": DIM, "scale": SCALE}},
    "sampler": "dis",
    "fixed": {
        "batch_size": 64,
        "eval_samples": 500,
        "time": {"n_steps": 8, "init_dt": 0.1},
        "network": {"hidden": 16, "n_time_features": 8},
        "prior": {"init_std": 2.0},
        "optim": {"lr_prior": 0.05},
    },
    "search_space": {"optim.lr_network": {"type": "float", "low": 1e-3, "high": 3e-3, "log": True}},
    "objective": {"metric": "delta_log_z", "direction": "minimize"},
    "budget": {"trials": 1, "iterations": 30, "eval_interval": 15},
    "resources": {"cpus": 1, "imr_parallel_tasks": 0},
}
"""A study of the module's target: DIS, a learned Gaussian prior, seconds of training."""


def write_module(folder: Path, name: str = MODULE) -> Path:
    """Write the user's target module into `folder`."""
    path = folder / f"{name}.py"
    path.write_text(SOURCE)
    return path


def write_study(folder: Path, **changes: Any) -> Path:
    """Write STUDY with top-level `changes` into `folder`/study.yaml."""
    data = copy.deepcopy(STUDY)
    data.update(changes)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
