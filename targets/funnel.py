"""Neal's funnel: x1 ~ N(0, 3^2), x_i | x1 ~ N(0, exp(x1)) for i >= 2."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from targets.base import SupportRegion, Target
from targets.registry import register

_LOG_2PI = math.log(2 * math.pi)


@register("funnel", dim="10 (any >= 2)", summary="Neal's funnel", log_Z=True, samples=True)
class Funnel(Target):
    """Neal's funnel in `dim` dimensions; normalised (log Z = 0) with exact samples."""

    name = "funnel"
    log_Z = 0.0
    has_samples = True

    def __init__(self, dim: int = 10, scale: float = 3.0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        if scale <= 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.dim = dim
        self.scale = scale

    def support(self) -> SupportRegion:
        """N(0, scale^2 I): the first coordinate's marginal, wide enough for the others' bulk."""
        return SupportRegion("gaussian", self.scale)

    def log_prob(self, x: Tensor) -> Tensor:
        return self._log_prob(x[:, 0], x[:, 1:].square().sum(-1), torch.exp(-x[:, 0]))

    def _log_prob(self, v: Tensor, rest_sq: Tensor, precision: Tensor) -> Tensor:
        """log rho from x1 = v, sum_{i>=2} x_i^2 and the conditional precision exp(-v)."""
        n_rest = self.dim - 1
        lp_v = -0.5 * (v / self.scale) ** 2 - math.log(self.scale) - 0.5 * _LOG_2PI
        lp_rest = -0.5 * rest_sq * precision - 0.5 * n_rest * v - 0.5 * n_rest * _LOG_2PI
        return lp_v + lp_rest

    def _score(self, x: Tensor, rest_sq: Tensor, precision: Tensor) -> Tensor:
        """Score: -v / s^2 + exp(-v) sum x_i^2 / 2 - (d - 1) / 2 in v; -exp(-v) x_i in x_i."""
        v = x[:, :1]
        d_v = -v / self.scale**2 + 0.5 * (rest_sq * precision).unsqueeze(-1) - 0.5 * (self.dim - 1)
        return torch.cat([d_v, -precision.unsqueeze(-1) * x[:, 1:]], dim=-1)

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """log rho(x) and its gradient in closed form (no autograd), sharing exp(-x1)."""
        x = x.detach()
        v, rest_sq, precision = x[:, 0], x[:, 1:].square().sum(-1), torch.exp(-x[:, 0])
        return self._log_prob(v, rest_sq, precision), self._score(x, rest_sq, precision)

    def score(self, x: Tensor) -> Tensor:
        """grad_x log rho(x) in closed form."""
        x = x.detach()
        return self._score(x, x[:, 1:].square().sum(-1), torch.exp(-x[:, 0]))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        v = self.scale * eps[:, :1]
        return torch.cat([v, torch.exp(0.5 * v) * eps[:, 1:]], dim=1)
