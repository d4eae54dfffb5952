"""Pieces of the annealed Langevin base drift of MCD, CMCD and DBS (PAPER.md §1).

a_n(x) = beta_n grad log pi(x) + (1 - beta_n) grad log p_phi(x), with learnable betas, an
optional norm clip on grad log pi, and gradients through grad log pi (Hessian-vector products of
the target) so that the reparameterised gradient is the ELBO's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from targets.base import Target
from trainers.parametrize import positive, softplus_parameter


class BetaSchedule(nn.Module):
    """beta_0 = 0 <= beta_1 <= ... <= beta_N = 1 from N softplus-parameterised increments.

    beta_n = (c_1 + ... + c_n) / (c_1 + ... + c_N) with c = softplus(raw) > 0; the end points
    are constants, so they stay exactly 0 and 1 and receive no gradient. Equal increments at
    the start: beta_n = n / N.
    """

    def __init__(self, n_steps: int, learn: bool = True) -> None:
        super().__init__()
        self.raw_increments = softplus_parameter(1.0, (n_steps,), learn)

    def forward(self) -> Tensor:
        """The betas [N + 1]."""
        cumulative = torch.cumsum(positive(self.raw_increments), 0)
        inner = cumulative[:-1] / cumulative[-1]  # <= 1: a cumulative sum never decreases
        return torch.cat([inner.new_zeros(1), inner, inner.new_ones(1)])


def clip_score(score: Tensor, clip: float | None) -> Tensor:
    """Each row of `score` [B, d] scaled down to norm `clip * sqrt(d)` if longer (None: as is)."""
    if clip is None:
        return score
    max_norm = clip * math.sqrt(score.shape[-1])
    norm = torch.linalg.vector_norm(score, dim=-1, keepdim=True)
    return score * (max_norm / norm.clamp_min(max_norm))


class _TargetScore(torch.autograd.Function):
    """grad log rho(x) as a function of x, from its precomputed value.

    The backward pass returns the Hessian-vector product H(x) g, computed by differentiating
    log rho twice at x, only when a gradient is actually asked for.
    """

    @staticmethod
    def forward(ctx, x: Tensor, score: Tensor, target: Target) -> Tensor:
        ctx.save_for_backward(x)
        ctx.target = target
        return score.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (score,) = torch.autograd.grad(ctx.target.log_prob(x).sum(), x, create_graph=True)
            (hvp,) = torch.autograd.grad(score, x, grad)
        return hvp, None, None


def drift_target_score(
    x: Tensor, score: Tensor, target: Target, clip: float | None, differentiate: bool
) -> Tensor:
    """grad log rho at `x` for the drift from its detached value `score`.

    Differentiable in `x` when `differentiate`; clipped to norm `clip * sqrt(d)` when `clip`.
    """
    if differentiate and x.requires_grad:
        score = _TargetScore.apply(x, score, target)
    return clip_score(score, clip)
