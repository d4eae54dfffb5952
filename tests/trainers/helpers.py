"""Test targets for the trainers with independently known answers."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from targets.base import Target


class ScaledGaussian(Target):
    """rho(x) = Z * N(x; mean, diag(std^2)): log Z known and != 0, analytic score."""

    name = "scaled_gaussian"

    def __init__(self, mean: list[float], std: list[float], log_Z: float) -> None:
        super().__init__()
        self.dim = len(mean)
        self.log_Z = log_Z
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float64))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float64))

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        std = self.buffer("std", x)
        z = (x - self.buffer("mean", x)) / std
        log_norm = torch.log(std).sum() + 0.5 * self.dim * math.log(2 * math.pi)
        return self.log_Z - 0.5 * z.square().sum(-1) - log_norm, -z / std

    def log_prob(self, x: Tensor) -> Tensor:
        return self.log_prob_and_score(x)[0]


def scaled_gaussian() -> ScaledGaussian:
    """The d = 5 test target: log Z = 1.7, shifted mean, unequal scales."""
    return ScaledGaussian([1.0, -2.0, 0.5, 3.0, -1.0], [0.5, 1.0, 2.0, 0.8, 1.5], log_Z=1.7)


def bound_holds(metrics: dict[str, float], log_w_std: float, n: int, log_Z: float) -> bool:
    """ELBO <= log Z up to 4 standard errors of the Monte Carlo mean."""
    return metrics["elbo"] <= log_Z + 4 * log_w_std / math.sqrt(n)
