"""Brownian motion with unknown innovation and observation noise, the middle 10 of 30 unobserved.

Model (inference-gym's `BrownianMotionUnknownScalesMissingMiddleObservations`, data/README.md):
innovation and observation noise scales each LogNormal(0, 2), locs[0] ~ N(0, innovation),
locs[t] ~ N(locs[t-1], innovation), observed[t] ~ N(locs[t], observation) where observed. The
sampler sees x = (log innovation, log observation, locs[0..29]); with its log-Jacobian, the
LogNormal(0, 2) prior of a scale is exactly an N(0, 2^2) density on its logarithm.

The 30 observations are embedded below rather than fetched: inference-gym publishes them only
as a literal inside its Python source (inference-gym 0.0.5, Apache 2.0,
`inference_gym/internal/data/brownian_motion_missing_middle_observations.py`, `OBSERVED_LOC`,
float32), which is what we copy. The tests check it against the project's shared `brownian.npz`.
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

OBSERVED_LOC = np.array(
    [
        0.21592641, 0.118771404, -0.07945447, 0.037677474, -0.27885845, -0.1484156,
        -0.3250906, -0.22957903, -0.44110894, -0.09830782, np.nan, np.nan, np.nan,
        np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, -0.8786016,
        -0.83736074, -0.7384849, -0.8939254, -0.7774566, -0.70238715, -0.87771565,
        -0.51853573, -0.6948214, -0.6202789,
    ],
    dtype=np.float32,
)  # fmt: skip
LOG_SCALE_PRIOR_STD = 2.0


@register("brownian", dim="32", summary="Brownian motion, unknown noise scales, 10 of 30 missing")
class BrownianMotion(Target):
    """Posterior of (log innovation scale, log observation scale, locs[0..29])."""

    name = "brownian"
    dim = 2 + len(OBSERVED_LOC)

    def __init__(self) -> None:
        super().__init__()
        observed = torch.from_numpy(OBSERVED_LOC.astype(np.float64))
        seen = ~torch.isnan(observed)
        self.register_buffer("observed", torch.where(seen, observed, 0.0))
        self.register_buffer("seen", seen.double())
        self._n_seen = int(seen.sum())

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Log scales [B, 1] each, steps locs[t] - locs[t-1] and observed - locs (0 where
        missing), [B, T] each."""
        log_innovation, log_observation, locs = x[:, :1], x[:, 1:2], x[:, 2:]
        steps = locs - F.pad(locs[:, :-1], (1, 0))
        residuals = self.buffer("seen", x) * (self.buffer("observed", x) - locs)
        return log_innovation, log_observation, steps, residuals

    def log_prob(self, x: Tensor) -> Tensor:
        log_innovation, log_observation, steps, residuals = self._split(x)
        log_scales = x[:, :2]
        return (
            normal_log_density(log_scales, math.log(LOG_SCALE_PRIOR_STD)).sum(-1)
            + normal_log_density(steps, log_innovation).sum(-1)
            + (self.buffer("seen", x) * normal_log_density(residuals, log_observation)).sum(-1)
        )

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach()
        log_innovation, log_observation, steps, residuals = self._split(x)
        innovation_precision = torch.exp(-2 * log_innovation)
        observation_precision = torch.exp(-2 * log_observation)
        log_scale_grad = -x[:, :2] / LOG_SCALE_PRIOR_STD**2 + torch.cat(
            [
                innovation_precision * steps.square().sum(-1, keepdim=True) - steps.shape[1],
                observation_precision * residuals.square().sum(-1, keepdim=True) - self._n_seen,
            ],
            dim=-1,
        )
        # locs[t] enters step t (as +) and step t + 1 (as -), and its own residual (as -).
        locs_grad = innovation_precision * (F.pad(steps[:, 1:], (0, 1)) - steps)
        locs_grad = locs_grad + observation_precision * residuals
        return self.log_prob(x), torch.cat([log_scale_grad, locs_grad], dim=-1)
