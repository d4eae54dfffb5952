"""The Gaussian-mixture prior p_phi of PAPER.md §2: K_max diagonal slots, uniform weights."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainers import native
from trainers.parametrize import inverse_softplus, positive, softplus_parameter


@dataclass(frozen=True)
class ScoreTerms:
    """The parameter-only tensors of `GaussianMixturePrior.score`, computed once per rollout
    (a whole term: every step of it takes all of them)."""

    means: Tensor  # [K_max, d], inactive slots read as 0
    precision: Tensor  # 1 / sigma^2 [K_max, d], inactive slots read as 1
    weighted_means: Tensor  # mu / sigma^2 [K_max, d]
    logit_offset: Tensor  # -0.5 mu^T diag(1 / sigma^2) mu - sum log sigma [K_max]

    def as_tuple(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(means, precision, weighted_means, logit_offset)."""
        return self.means, self.precision, self.weighted_means, self.logit_offset


class GaussianMixturePrior(nn.Module):
    """p_phi(x) = sum over active k of N(x; mu_k, diag(sigma_k^2)) / K_active.

    `k_max` slots are pre-allocated so that adding a component changes no shapes; the boolean
    buffer `active` says which take part. Weights are uniform over the active slots and are not
    learned; means and scales (sigma = softplus(raw)) are, unless `learn=False` (a fixed
    Gaussian). K_max = 1 with `learn=True` is the learned-Gaussian baseline.
    """

    def __init__(
        self,
        k_max: int,
        dim: int,
        k_init: int = 1,
        init_std: float = 1.0,
        init_mean_std: float = 0.0,
        learn: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not 1 <= k_init <= k_max:
            raise ValueError(f"need 1 <= k_init <= k_max, got k_init={k_init}, k_max={k_max}")
        self.k_max = k_max
        self.dim = dim
        means = init_mean_std * torch.randn(k_max, dim, generator=generator)
        self.means = nn.Parameter(means, requires_grad=learn)
        self.raw_scales = softplus_parameter(init_std, (k_max, dim), learn)
        self.register_buffer("active", torch.arange(k_max) < k_init)

    @property
    def scales(self) -> Tensor:
        """Per-slot standard deviations sigma = softplus(raw) [K_max, d]."""
        return positive(self.raw_scales)

    @property
    def n_active(self) -> int:
        """Number of active components."""
        return int(self.active.sum())

    def _mask(self, values: Tensor) -> Tensor:
        """`values` [..., K_max] with inactive slots set to -inf."""
        return torch.where(self.active, values, -math.inf)

    def _guarded(self) -> tuple[Tensor, Tensor]:
        """(means, scales) with inactive slots read as (0, 1).

        Whatever an inactive slot holds, nothing non-finite enters the computation, so all
        gradients stay finite (and are exactly zero for inactive slots).
        """
        if self.k_max == 1:  # the only slot is always active
            return self.means, self.scales
        slot_active = self.active.unsqueeze(-1)
        return (
            torch.where(slot_active, self.means, 0.0),
            torch.where(slot_active, self.scales, 1.0),
        )

    def _log_n_active(self, like: Tensor) -> Tensor:
        return torch.log(self.active.sum().to(like.dtype))

    def component_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; mu_k, sigma_k) of every slot [B, K_max]; -inf for inactive slots."""
        means, scales = self._guarded()
        z = (x.unsqueeze(1) - means) / scales
        log_norm = torch.log(scales).sum(-1) + 0.5 * self.dim * math.log(2 * math.pi)
        return self._mask(-0.5 * z.square().sum(-1) - log_norm)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_phi(x) [B], differentiable in x, means and scales.

        Normalised: p_phi integrates to 1 (a mixture of normalised Gaussians, uniform weights
        over the active components), unlike a target's `Target.log_prob`, which is log rho(x) up
        to the unknown or known constant log Z.
        """
        return torch.logsumexp(self.component_log_prob(x), dim=-1) - self._log_n_active(x)

    def score_terms(self) -> ScoreTerms:
        """What `score` needs of the parameters, for reuse over the steps of a rollout."""
        means, scales = self._guarded()
        precision = scales.pow(-2)
        weighted_means = means * precision
        offset = -0.5 * (means * weighted_means).sum(-1) - torch.log(scales).sum(-1)
        return ScoreTerms(means, precision, weighted_means, offset)

    def score(self, x: Tensor, terms: ScoreTerms | None = None) -> Tensor:
        """grad_x log p_phi(x) [B, d], analytic and differentiable in x, means and scales.

        `terms` are `score_terms()` (computed here when not given). The responsibilities use
        the expanded quadratic form (matrix products, no [B, K, d] intermediate): this is the
        prior's per-step cost in the integrator.
        """
        if terms is None:
            terms = self.score_terms()
        compiled = native.active()  # its twin, with the same operators (trainers/native.py)
        if compiled is not None:
            active = None if self.k_max == 1 else self.active
            return compiled.prior_score(x, *terms.as_tuple(), active)
        if self.k_max == 1:
            return (terms.means - x) * terms.precision
        quad = x.square() @ terms.precision.T - 2 * x @ terms.weighted_means.T
        logits = terms.logit_offset - 0.5 * quad
        responsibilities = torch.softmax(self._mask(logits), dim=-1)
        return _mixture_score(x, responsibilities, terms.precision, terms.weighted_means)

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(log p_phi(x), grad_x log p_phi(x)) from one exact evaluation of the components."""
        component = self.component_log_prob(x)
        log_prob = torch.logsumexp(component, dim=-1)
        responsibilities = torch.exp(component - log_prob.unsqueeze(-1))
        means, scales = self._guarded()
        precision = scales.pow(-2)
        score = _mixture_score(x, responsibilities, precision, means * precision)
        return log_prob - self._log_n_active(x), score

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """The randomness of `n` samples: slots [n] (uniform over the active ones) and standard
        normal noise [n, d]; `place` turns them into samples."""
        means = self.means
        if self.k_max == 1:
            components = torch.zeros(n, dtype=torch.long, device=means.device)
        else:
            components = torch.multinomial(
                self.active.to(means.dtype), n, replacement=True, generator=generator
            )
        eps = torch.randn(n, self.dim, generator=generator, device=means.device, dtype=means.dtype)
        return components, eps

    def place(self, components: Tensor, eps: Tensor) -> Tensor:
        """Samples mu_k + sigma_k * eps [n, d] of slots `components` [n]: reparameterised, so
        gradients reach the means and scales."""
        return self.means[components] + self.scales[components] * eps

    def rsample_with_components(
        self, n: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """`n` reparameterised samples [n, d] and the slot index [n] each was drawn from
        (`draw`, then `place`)."""
        components, eps = self.draw(n, generator)
        return self.place(components, eps), components

    def rsample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` reparameterised samples [n, d] (see `rsample_with_components`)."""
        return self.rsample_with_components(n, generator)[0]

    @torch.no_grad()
    def activate(self, mean: Tensor, scale: Tensor | float) -> int:
        """Put a new component at `mean` with std `scale` into the first free slot; its index."""
        free = (~self.active).nonzero()
        if len(free) == 0:
            raise ValueError(f"all {self.k_max} mixture slots are already active")
        slot = int(free[0])
        scale = torch.as_tensor(scale, dtype=self.means.dtype, device=self.means.device)
        if bool((scale <= 0).any()):
            raise ValueError("component scales must be positive")
        self.means[slot] = mean.to(self.means)
        self.raw_scales[slot] = inverse_softplus(scale).expand(self.dim)
        self.active[slot] = True
        return slot

    def extra_repr(self) -> str:
        return f"k_max={self.k_max}, dim={self.dim}, n_active={self.n_active}"


def _mixture_score(
    x: Tensor, responsibilities: Tensor, precision: Tensor, weighted_means: Tensor
) -> Tensor:
    """sum_k r_k (mu_k - x) / sigma_k^2 for responsibilities r [B, K_max]."""
    return responsibilities @ weighted_means - x * (responsibilities @ precision)
