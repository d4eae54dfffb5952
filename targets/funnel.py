"""Neal's funnel: x1 ~ N(0, 3^2), x_i | x1 ~ N(0, exp(x1)) for i >= 2."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from targets.base import Target
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

    def log_prob(self, x: Tensor) -> Tensor:
        v, rest = x[:, 0], x[:, 1:]
        n_rest = self.dim - 1
        lp_v = -0.5 * (v / self.scale) ** 2 - math.log(self.scale) - 0.5 * _LOG_2PI
        lp_rest = (
            -0.5 * (rest**2).sum(-1) * torch.exp(-v) - 0.5 * n_rest * v - 0.5 * n_rest * _LOG_2PI
        )
        return lp_v + lp_rest

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        v = self.scale * eps[:, :1]
        return torch.cat([v, torch.exp(0.5 * v) * eps[:, 1:]], dim=1)
