"""An example of a user-defined target: an anisotropic Gaussian whose normaliser is known.

The study file beside this module names it as `anisotropic:AnisotropicGaussian`; `gmp` imports
the module from the study file's folder (or from PYTHONPATH, or an installed package).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from targets import SupportRegion, Target


class AnisotropicGaussian(Target):
    """N(shift, diag(scales^2)) with scales spread log-evenly over [min_scale, max_scale].

    `log_prob` leaves out the normaliser, so log Z = sum_i log(sqrt(2 pi) scale_i) is known.
    """

    def __init__(
        self, dim: int = 4, min_scale: float = 0.5, max_scale: float = 3.0, shift: float = 1.0
    ) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if not 0 < min_scale <= max_scale:
            raise ValueError(f"need 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
        self.name = "anisotropic_gaussian"
        self.dim = dim
        scales = torch.logspace(
            math.log10(min_scale), math.log10(max_scale), dim, dtype=torch.float64
        )
        self.register_buffer("scales", scales)
        self.register_buffer("mean", torch.full((dim,), float(shift), dtype=torch.float64))
        self.log_Z = float(torch.log(scales * math.sqrt(2 * math.pi)).sum())
        self.has_samples = True
        self._region = SupportRegion(shape="gaussian", scale=max_scale, center=shift)

    def log_prob(self, x: Tensor) -> Tensor:
        """-|(x - shift) / scales|^2 / 2 for each row of `x` [B, dim]; returns [B]."""
        z = (x - self.buffer("mean", x)) / self.buffer("scales", x)
        return -0.5 * z.square().sum(dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` exact samples (float64, CPU)."""
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self._buffers["mean"].cpu() + self._buffers["scales"].cpu() * noise

    def support(self) -> SupportRegion:
        """N(shift, max_scale^2 I): covers the target, for IMR's support-start chains."""
        return self._region
