"""The NICE flow (Dinh et al. 2015) and a class-label MLP, as functions of named tensors.

NICE maps data x to a latent z in three steps: a fixed permutation `order` puts the half A of
the coordinates first (the black squares of a checkerboard, say) and the other half B after it;
coupling k adds an MLP of one half to the other (k even: B += m_k(A), k odd: A += m_k(B)); a
learnable diagonal scaling gives z = exp(log_scale) * (A, B). Every step is volume-preserving
except the scaling, so log p(x) = sum_i log p_base(z_i) + sum_i log_scale_i exactly, with an
iid standard Gaussian or logistic base. z is kept in the permuted layout (the base is iid).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

from targets.flows.config import ClassifierArch, NiceArch
from targets.flows.mlp import Params, apply_mlp, init_mlp

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class Nice:
    """A NICE flow on R^dim with architecture `arch`; parameters are passed to every call."""

    arch: NiceArch
    dim: int

    @property
    def n_first(self) -> int:
        """Size of the half A that comes first in `order` (the larger one for odd dim)."""
        return self.dim - self.dim // 2

    def init(self, order: Tensor, generator: torch.Generator) -> dict[str, Tensor]:
        """Initial parameters (the flow starts as the identity up to `order`)."""
        if sorted(order.tolist()) != list(range(self.dim)):
            raise ValueError(f"order must be a permutation of range({self.dim})")
        n_a, n_b = self.n_first, self.dim - self.n_first
        params = {"order": order.to(torch.int64), "log_scale": torch.zeros(self.dim)}
        for k in range(self.arch.n_couplings):
            n_in, n_out = (n_a, n_b) if k % 2 == 0 else (n_b, n_a)
            sizes = [n_in] + [self.arch.hidden] * self.arch.depth + [n_out]
            params |= init_mlp(sizes, f"coupling{k}", generator, zero_last=True)
        return params

    def _shift(self, params: Params, k: int, x: Tensor) -> Tensor:
        return apply_mlp(params, f"coupling{k}", self.arch.depth + 1, x)

    def forward(self, params: Params, x: Tensor) -> Tensor:
        """Latent z = f(x) for a batch x of shape [B, dim] (z in the permuted layout)."""
        h = x[:, params["order"]]
        a, b = h[:, : self.n_first], h[:, self.n_first :]
        for k in range(self.arch.n_couplings):
            if k % 2 == 0:
                b = b + self._shift(params, k, a)
            else:
                a = a + self._shift(params, k, b)
        return torch.cat([a, b], dim=1) * torch.exp(params["log_scale"])

    def inverse(self, params: Params, z: Tensor) -> Tensor:
        """Data x = f^-1(z) for a batch of latents z of shape [B, dim]."""
        h = z * torch.exp(-params["log_scale"])
        a, b = h[:, : self.n_first], h[:, self.n_first :]
        for k in reversed(range(self.arch.n_couplings)):
            if k % 2 == 0:
                b = b - self._shift(params, k, a)
            else:
                a = a - self._shift(params, k, b)
        return torch.cat([a, b], dim=1)[:, torch.argsort(params["order"])]

    def base_log_prob(self, z: Tensor) -> Tensor:
        """log p_base(z) summed over coordinates: [B, dim] -> [B]."""
        if self.arch.base == "gaussian":
            return -0.5 * (z * z).sum(-1) - self.dim * _HALF_LOG_2PI
        return -(F.softplus(z) + F.softplus(-z)).sum(-1)

    def log_prob(self, params: Params, x: Tensor) -> Tensor:
        """Exact log density of the flow at a batch x: [B, dim] -> [B]."""
        return self.base_log_prob(self.forward(params, x)) + params["log_scale"].sum()

    def sample_base(self, n: int, like: Tensor, generator: torch.Generator | None) -> Tensor:
        """`n` base draws in the dtype and device of `like`."""
        shape, kw = (n, self.dim), {"dtype": like.dtype, "device": like.device}
        if self.arch.base == "gaussian":
            return torch.randn(shape, generator=generator, **kw)
        tiny = torch.finfo(like.dtype).tiny
        return torch.logit(torch.rand(shape, generator=generator, **kw).clamp_min(tiny))

    def sample(self, params: Params, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` exact draws from the flow, in the dtype and device of `params["log_scale"]`."""
        return self.inverse(params, self.sample_base(n, params["log_scale"], generator))


@dataclass(frozen=True)
class Classifier:
    """A ReLU MLP from R^dim to `n_classes` logits; parameters are passed to every call."""

    arch: ClassifierArch
    dim: int
    n_classes: int

    def init(self, generator: torch.Generator) -> dict[str, Tensor]:
        """Initial parameters."""
        sizes = [self.dim] + [self.arch.hidden] * self.arch.depth + [self.n_classes]
        return init_mlp(sizes, "classifier", generator)

    def logits(self, params: Params, x: Tensor) -> Tensor:
        """Class logits for a batch x: [B, dim] -> [B, n_classes]."""
        return apply_mlp(params, "classifier", self.arch.depth + 1, x)
