"""Crowder's seeds: random-effects logistic regression of germination on seed and root extract.

Model (data/README.md): tau ~ Gamma(0.01, rate 0.01), a_0, a_1, a_2, a_12 ~ N(0, 10^2),
b_j ~ N(0, 1/tau), r_j ~ Binomial(n_j, sigmoid(a_0 + a_1 x1_j + a_2 x2_j + a_12 x1_j x2_j + b_j))
for the 21 plates. The sampler sees x = (log tau, a_0, a_1, a_2, a_12, b_1..b_21), so the density
includes the log-Jacobian log tau; every term is a normalised log density (binomial coefficients
included).

The 21 plates are embedded below rather than fetched: the table is tiny and classic (Crowder 1978,
Table 3; the "Seeds" example of the BUGS manual, Examples Volume I) and has no canonical download
address to pin a checksum to. The tests check it against the project's shared `seeds.csv`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from targets.base import Target
from targets.normal import normal_log_density
from targets.registry import register

# Per plate: seeds germinated r, seeds sown n, seed type x1 (O. aegyptiaca 75 / 73),
# root extract x2 (bean / cucumber).
PLATES = np.array(
    [
        [10, 39, 0, 0],
        [23, 62, 0, 0],
        [23, 81, 0, 0],
        [26, 51, 0, 0],
        [17, 39, 0, 0],
        [5, 6, 0, 1],
        [53, 74, 0, 1],
        [55, 72, 0, 1],
        [32, 51, 0, 1],
        [46, 79, 0, 1],
        [10, 13, 0, 1],
        [8, 16, 1, 0],
        [10, 30, 1, 0],
        [8, 28, 1, 0],
        [23, 45, 1, 0],
        [0, 4, 1, 0],
        [3, 12, 1, 1],
        [22, 41, 1, 1],
        [15, 30, 1, 1],
        [32, 51, 1, 1],
        [3, 7, 1, 1],
    ],
    dtype=np.float64,
)
TAU_SHAPE = 0.01
TAU_RATE = 0.01
COEF_SCALE = 10.0
N_COEFS = 4


@register("seeds", dim="26", summary="Crowder's seeds random-effects logistic regression")
class Seeds(Target):
    """Posterior of (log tau, a_0, a_1, a_2, a_12, b_1..b_21) of the seeds model."""

    name = "seeds"
    dim = 1 + N_COEFS + len(PLATES)

    def __init__(self) -> None:
        super().__init__()
        germinated, sown, x1, x2 = PLATES.T
        covariates = np.stack([np.ones_like(x1), x1, x2, x1 * x2], axis=1)
        self.register_buffer("covariates", torch.from_numpy(covariates))
        self.register_buffer("germinated", torch.from_numpy(germinated))
        self.register_buffer("sown", torch.from_numpy(sown))
        self._log_binomial = sum(
            math.lgamma(n + 1) - math.lgamma(r + 1) - math.lgamma(n - r + 1)
            for r, n in zip(germinated, sown, strict=True)
        )
        self._log_gamma_norm = TAU_SHAPE * math.log(TAU_RATE) - math.lgamma(TAU_SHAPE)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """log tau [B], coefficients a [B, 4], random effects b [B, 21], logits [B, 21]."""
        log_tau, a, b = x[:, 0], x[:, 1 : 1 + N_COEFS], x[:, 1 + N_COEFS :]
        return log_tau, a, b, a @ self.buffer("covariates", x).T + b

    def log_prob(self, x: Tensor) -> Tensor:
        log_tau, a, b, logits = self._split(x)
        r, n = self.buffer("germinated", x), self.buffer("sown", x)
        likelihood = (r * logits - n * F.softplus(logits)).sum(-1) + self._log_binomial
        # Gamma density of tau times the Jacobian tau, as a function of log tau.
        log_tau_prior = TAU_SHAPE * log_tau - TAU_RATE * torch.exp(log_tau) + self._log_gamma_norm
        coef_prior = normal_log_density(a, math.log(COEF_SCALE)).sum(-1)
        effect_prior = normal_log_density(b, -0.5 * log_tau.unsqueeze(-1)).sum(-1)
        return likelihood + log_tau_prior + coef_prior + effect_prior

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach()
        log_tau, a, b, logits = self._split(x)
        tau = torch.exp(log_tau)
        residual = self.buffer("germinated", x) - self.buffer("sown", x) * torch.sigmoid(logits)
        grad_log_tau = (
            TAU_SHAPE - TAU_RATE * tau + 0.5 * b.shape[1] - 0.5 * tau * b.square().sum(-1)
        )
        grad_a = residual @ self.buffer("covariates", x) - a / COEF_SCALE**2
        grad_b = residual - tau.unsqueeze(-1) * b
        score = torch.cat([grad_log_tau.unsqueeze(-1), grad_a, grad_b], dim=-1)
        return self.log_prob(x), score
