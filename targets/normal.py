"""The centred Gaussian log density shared by the Bayesian targets' priors and likelihoods."""

from __future__ import annotations

import math

import torch
from torch import Tensor

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def normal_log_density(z: Tensor, log_scale: Tensor | float) -> Tensor:
    """Elementwise log N(z; 0, exp(log_scale)^2); `log_scale` broadcasts against `z`."""
    if not isinstance(log_scale, Tensor):
        log_scale = torch.tensor(log_scale, dtype=z.dtype, device=z.device)
    return -0.5 * z.square() * torch.exp(-2 * log_scale) - log_scale - _HALF_LOG_2PI
