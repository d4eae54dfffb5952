"""Learnable time discretisation (PAPER.md §1): dt_n = softplus(theta) * s(n), friction sigma2."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from trainers.config import TimeConfig
from trainers.parametrize import positive, softplus_parameter

COSINE_FLOOR = 0.01  # m in s(n) = (1 - m) cos(pi/2 (1 + c - t) / (1 + c))^2 + m
COSINE_OFFSET = 0.008  # c


def schedule_shape(kind: str, n_steps: int) -> Tensor:
    """The fixed factor s(n), n = 0..N-1, of dt_n (float64; 1 at n = 0 up to rounding).

    cosine: (1 - m) cos(pi/2 (1 + c - t) / (1 + c))^2 + m with t = (N - n) / N;
    linear: (1 - m) t + m (same end points); constant and per_step: 1.
    """
    t = (n_steps - torch.arange(n_steps, dtype=torch.float64)) / n_steps
    m = COSINE_FLOOR
    if kind == "cosine":
        angle = 0.5 * math.pi * (1 + COSINE_OFFSET - t) / (1 + COSINE_OFFSET)
        return (1 - m) * torch.cos(angle).square() + m
    if kind == "linear":
        return (1 - m) * t + m
    if kind in ("constant", "per_step"):
        return torch.ones(n_steps, dtype=torch.float64)
    raise ValueError(f"unknown time schedule {kind!r}")


class TimeSchedule(nn.Module):
    """Step sizes dt [N], friction sigma2 (scalar or [d]) and eta_n = dt_n * sigma2.

    One learnable scalar scales the fixed shape s(n) (or one learnable dt per step for
    `per_step`), so the time horizon T = sum dt_n is learned through the ELBO.
    """

    def __init__(self, config: TimeConfig, dim: int) -> None:
        super().__init__()
        self.n_steps = config.n_steps
        n_dt = config.n_steps if config.schedule == "per_step" else 1
        self.raw_dt = softplus_parameter(config.init_dt, (n_dt,), config.learn_dt)
        self.register_buffer("shape", schedule_shape(config.schedule, config.n_steps).float())
        friction_shape = (dim,) if config.per_dim_friction else ()
        self.learned_value = config.learned_value
        if config.learned_value == "sigma2":
            self.raw_sigma2 = softplus_parameter(
                config.init_sigma2, friction_shape, config.learn_friction
            )
        else:
            self.raw_friction = softplus_parameter(
                1 / config.init_sigma2, friction_shape, config.learn_friction
            )

    def dt(self) -> Tensor:
        """Step sizes dt_n [N]."""
        return positive(self.raw_dt) * self.shape

    def sigma2(self) -> Tensor:
        """1 / friction: a scalar or one value per dimension."""
        if self.learned_value == "sigma2":
            return positive(self.raw_sigma2)
        return positive(self.raw_friction).reciprocal()

    def eta(self) -> Tensor:
        """Langevin step sizes eta_n = dt_n * sigma2: [N] or [N, d] with per-dimension friction."""
        sigma2 = self.sigma2()
        dt = self.dt()
        return dt * sigma2 if sigma2.dim() == 0 else dt.unsqueeze(-1) * sigma2

    def horizon(self) -> Tensor:
        """Total time T = sum_n dt_n."""
        return self.dt().sum()
