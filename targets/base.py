"""The `Target` interface every density implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

DEFAULT_SUPPORT_SCALE = 1.0
"""Scale of the default support region: the Gaussian baseline's initial std (init_std 1)."""


@dataclass(frozen=True)
class SupportRegion:
    """A region that roughly covers a target's mass (where IMR's support-start chains begin):
    the box [center - scale, center + scale]^d, or the Gaussian N(center, scale^2 I)."""

    shape: Literal["box", "gaussian"] = "gaussian"
    scale: float = DEFAULT_SUPPORT_SCALE
    center: float = 0.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"support scale must be > 0, got {self.scale}")

    def sample(self, n: int, dim: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` points [n, dim] (float64, CPU) drawn uniformly from the box or from the Gaussian."""
        if self.shape == "box":
            unit = torch.rand(n, dim, generator=generator, dtype=torch.float64) * 2 - 1
        else:
            unit = torch.randn(n, dim, generator=generator, dtype=torch.float64)
        return self.center + self.scale * unit


class TargetError(ValueError):
    """A target was asked for with an unknown name or a bad argument."""


class TargetArgumentError(TargetError):
    """A target's keyword arguments: one it does not take, or a value it refuses."""


class Target:
    """An unnormalised density rho(x) on R^d with optional ground truth.

    Subclasses set `name` and `dim`, store constant tensors with `register_buffer` (float64, on
    the CPU) and implement `log_prob`. Buffers are served in the dtype and device of the input,
    so one target instance works in float32 and float64, on the CPU and on CUDA.

    Optional knowledge, used by the metrics:
    - `log_Z`: the exact (or best-known) log normaliser, else None;
    - `sample(n, generator)`: exact or reference samples (`has_samples` says if available);
    - `mode_of(x)` and `n_modes`: which mode (or class) each sample belongs to.

    `support()` names a region that roughly covers the target (default: N(0, I), the Gaussian
    baseline's start); IMR can start its candidate chains there.
    """

    name: str = "target"
    dim: int = 0
    log_Z: float | None = None
    has_samples: bool = False
    n_modes: int | None = None
    make_args: dict[str, object] | None = None  # {"name", "kwargs"} when built by `targets.make`

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}
        self._cache: dict[tuple[str, torch.dtype, torch.device], Tensor] = {}
        self.device = torch.device("cpu")

    def register_buffer(self, name: str, value: Tensor) -> None:
        """Keep a constant tensor, served in the caller's dtype and device by `buffer`."""
        self._buffers[name] = value.detach().to(self.device)
        self._cache = {k: v for k, v in self._cache.items() if k[0] != name}

    def buffer(self, name: str, like: Tensor) -> Tensor:
        """Constant `name` cast to the dtype and device of `like` (floating buffers only)."""
        value = self._buffers[name]
        if not value.is_floating_point():
            return value.to(like.device)
        key = (name, like.dtype, like.device)
        cached = self._cache.get(key)
        if cached is None:
            cached = value.to(device=like.device, dtype=like.dtype)
            self._cache[key] = cached
        return cached

    def to(self, device: str | torch.device) -> Target:
        """Move the constant tensors to `device`; returns self."""
        self.device = torch.device(device)
        self._buffers = {k: v.to(self.device) for k, v in self._buffers.items()}
        self._cache = {}
        return self

    def log_prob(self, x: Tensor) -> Tensor:
        """Unnormalised log density log rho(x) for a batch `x` of shape [B, d]; returns [B].

        Unnormalised: rho integrates to Z = exp(log_Z), not to 1 (log_Z is None where Z is
        unknown). The GMP prior's `GaussianMixturePrior.log_prob`, by contrast, is a normalised
        log density; the gap between the two is what the ELBO and the log Z estimate measure.
        """
        raise NotImplementedError

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """log rho(x) and its gradient grad_x log rho(x), detached from any outer graph."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            lp = self.log_prob(x)
            (grad,) = torch.autograd.grad(lp.sum(), x)
        return lp.detach(), grad

    def score(self, x: Tensor) -> Tensor:
        """grad_x log rho(x), detached."""
        return self.log_prob_and_score(x)[1]

    def support(self) -> SupportRegion:
        """A region that roughly covers the target's mass (default: N(0, I))."""
        return SupportRegion()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` exact or reference samples as float64 on the CPU (only if `has_samples`)."""
        raise NotImplementedError(f"target {self.name!r} has no ground-truth samples")

    def mode_of(self, x: Tensor) -> Tensor:
        """Index in [0, n_modes) of the mode (or class) each sample of `x` belongs to."""
        raise NotImplementedError(f"target {self.name!r} has no known modes")

    def describe(self) -> dict[str, object]:
        """What is known about this target, for listings and for tracking."""
        return {
            "name": self.name,
            "dim": self.dim,
            "log_Z": self.log_Z,
            "samples": self.has_samples,
            "modes": self.n_modes,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim})"
