"""Multi-modal synthetic targets with known modes: GMM40 and the mixture of Student-t (MoS)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from targets.base import SupportRegion, Target
from targets.registry import register

EXP_FLOOR = 80.0  # exp(-80) < 2e-35: smaller terms of a log-sum-exp are clamped to it


class _EqualWeightMixture(Target):
    """Equal-weight mixture of `n_modes` product distributions located at `means` (normalised)."""

    log_Z = 0.0
    has_samples = True

    def __init__(self, dim: int, n_modes: int, half_width: float, seed: int) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if n_modes < 1:
            raise ValueError(f"n_modes must be >= 1, got {n_modes}")
        self.dim = dim
        self.n_modes = n_modes
        self.half_width = half_width
        gen = torch.Generator().manual_seed(seed)
        means = (torch.rand(n_modes, dim, generator=gen, dtype=torch.float64) * 2 - 1) * half_width
        self.register_buffer("means", means)

    def component_log_prob(self, x: Tensor) -> Tensor:
        """log density of every component at every point: [B, n_modes]."""
        raise NotImplementedError

    def score_given(self, x: Tensor, responsibilities: Tensor) -> Tensor:
        """sum_k r_k grad_x log p_k(x) for responsibilities r [B, n_modes]: the mixture's score."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.logsumexp(self.component_log_prob(x), dim=-1) - math.log(self.n_modes)

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """log rho(x) and its gradient in closed form from one evaluation of the components."""
        x = x.detach()
        component = self.component_log_prob(x)
        top = component.amax(-1, keepdim=True)
        # Terms more than EXP_FLOOR below the largest change the sum by < 1e-34 relative, far
        # below float64 precision; clamping them keeps exp out of its slow path (~25x slower
        # for inputs beyond float32's range, common here: modes lie up to ~110 apart).
        weights = torch.exp((component - top).clamp_min(-EXP_FLOOR))
        total = weights.sum(-1, keepdim=True)
        log_prob = (top + torch.log(total)).squeeze(-1) - math.log(self.n_modes)
        return log_prob, self.score_given(x, weights / total)

    def mode_of(self, x: Tensor) -> Tensor:
        return self.component_log_prob(x).argmax(dim=-1)

    def support(self) -> SupportRegion:
        """The box the means are drawn from, [-half_width, half_width]^d."""
        return SupportRegion("box", self.half_width)

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        which = torch.randint(self.n_modes, (n,), generator=generator)
        return self._buffers["means"].cpu()[which] + self._noise(n, generator)


@register(
    "gmm40",
    dim="any (2, 50 in the paper)",
    summary="40 unit-variance Gaussians, means uniform in [-40, 40]^d",
    log_Z=True,
    samples=True,
    modes=True,
)
class GMM40(_EqualWeightMixture):
    """40 equal-weight unit-covariance Gaussians with means uniform in [-40, 40]^d (fixed seed)."""

    name = "gmm40"

    def __init__(self, dim: int = 2, n_modes: int = 40, half_width: float = 40.0, seed: int = 0):
        super().__init__(dim, n_modes, half_width, seed)

    def component_log_prob(self, x: Tensor) -> Tensor:
        means = self.buffer("means", x)
        sq = (x**2).sum(-1, keepdim=True) - 2 * x @ means.T + (means**2).sum(-1)
        return -0.5 * sq.clamp_min(0) - 0.5 * self.dim * math.log(2 * math.pi)

    def score_given(self, x: Tensor, responsibilities: Tensor) -> Tensor:
        """sum_k r_k (mu_k - x), as a matrix product (no [B, n_modes, d] intermediate)."""
        return responsibilities @ self.buffer("means", x) - x

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.randn(n, self.dim, generator=generator, dtype=torch.float64)


@register(
    "mos",
    dim="any (50 in the paper)",
    summary="10 Student-t (df 2) products, means uniform in [-10, 10]^d",
    log_Z=True,
    samples=True,
    modes=True,
)
class MixtureOfStudentT(_EqualWeightMixture):
    """10 equal-weight products of unit-scale Student-t (df 2), means uniform in [-10, 10]^d."""

    name = "mos"

    def __init__(
        self,
        dim: int = 50,
        n_modes: int = 10,
        half_width: float = 10.0,
        df: float = 2.0,
        seed: int = 0,
    ):
        if df <= 0:
            raise ValueError(f"df must be > 0, got {df}")
        super().__init__(dim, n_modes, half_width, seed)
        self.df = df
        self._log_norm = (
            math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
        )

    def component_log_prob(self, x: Tensor) -> Tensor:
        z = x.unsqueeze(1) - self.buffer("means", x)
        per_dim = -(self.df + 1) / 2 * torch.log1p(z**2 / self.df)
        return per_dim.sum(-1) + self.dim * self._log_norm

    def score_given(self, x: Tensor, responsibilities: Tensor) -> Tensor:
        """sum_k r_k g_k with g_k,i = -(df + 1) z_i / (df + z_i^2), z = x - mu_k."""
        z = x.unsqueeze(1) - self.buffer("means", x)
        per_dim = -(self.df + 1) * z / (self.df + z**2)
        return torch.einsum("bk,bkd->bd", responsibilities, per_dim)

    def _noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        normal = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        seed = int(torch.randint(2**62, (1,), generator=generator))
        chi2 = np.random.default_rng(seed).chisquare(self.df, size=(n, self.dim))
        return normal / torch.sqrt(torch.from_numpy(chi2) / self.df)
