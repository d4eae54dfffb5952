"""A target wrapper that counts where its log density is evaluated, to show what training costs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor

from targets.base import SupportRegion, Target


class CountingTarget(Target):
    """`base` with a count of the points at which log rho (with or without its gradient) was
    evaluated: one per row of every call, however the call is made (from any thread)."""

    def __init__(self, base: Target) -> None:
        super().__init__()
        self.base = base
        self.evaluations = 0
        self.set_aside = 0  # evaluations of the last `uncounted` block
        self._lock = threading.Lock()
        for key in ("name", "dim", "log_Z", "has_samples", "n_modes", "make_args", "device"):
            setattr(self, key, getattr(base, key))

    def to(self, device: str | torch.device) -> CountingTarget:
        """Move the base target to `device`; returns self."""
        self.base.to(device)
        self.device = self.base.device
        return self

    @contextmanager
    def uncounted(self) -> Iterator[CountingTarget]:
        """Within the block, evaluations are left out of `evaluations`; afterwards `set_aside`
        says how many there were."""
        before = self.evaluations
        try:
            yield self
        finally:
            self.set_aside = self.evaluations - before
            self.evaluations = before

    def _count(self, x: Tensor) -> None:
        with self._lock:
            self.evaluations += len(x)

    def log_prob(self, x: Tensor) -> Tensor:
        self._count(x)
        return self.base.log_prob(x)

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._count(x)
        return self.base.log_prob_and_score(x)

    def score(self, x: Tensor) -> Tensor:
        self._count(x)
        return self.base.score(x)

    def support(self) -> SupportRegion:
        return self.base.support()

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.base.sample(n, generator)

    def mode_of(self, x: Tensor) -> Tensor:
        return self.base.mode_of(x)
