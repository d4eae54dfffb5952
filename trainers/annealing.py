"""Target annealing against mode collapse: train on pi^(1/T) while T falls to 1.

A temperature T >= 1 flattens the target: pi^(1/T) has the modes of pi, wider and with lower
barriers between them, so a sampler trained on it first spreads over them before T reaches 1.
Only training is tempered; evaluation (`Trainer.evaluate`) is always at T = 1.

Schedules (`AnnealingConfig.schedule`), with i the 0-based index of the training iteration and
n = fraction * iterations the length of the annealing phase:

- ``none``: T = 1 (training is bit-identical to a run without annealing);
- ``linear``: T_i = 1 + (T0 - 1) (1 - min(i / n, 1));
- ``geometric``: T_i = T0^(1 - min(i / n, 1));
- ``adaptive``: T starts at T0; training runs in windows of ``window`` iterations, and after
  each window whose mean normalised ESS of the training batches (at the current temperature)
  is >= ``threshold``, T is multiplied by ``factor`` (clamped at 1). When ``iterations`` is set,
  T is 1 from i = n on at the latest, so that training ends on the true target even where the
  ESS never allows the last steps down.

All schedules are exactly 1 from i = n on when ``iterations``, the run's total number of
training iterations, is set; ``linear`` and ``geometric`` need it. A study sets it to its
``budget.iterations`` (``orchestrator.spec.StudySpec.trainer_config``) unless the study fixes
it; a `Trainer` used directly must be given it. The adaptive schedule's state (T and its window)
is part of the trainer's checkpoint, so a resumed run continues exactly.

IMR's MALA candidates and their selection use the true target (T = 1): IMR places new
components where pi has mass the prior misses, and the components must serve the final,
untempered sampler. Only the sampler's loss sees the tempered target.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from targets.base import Target
from trainers.config import AnnealingConfig
from trainers.integrator import Sampler


def linear_temperature(t0: float, progress: float) -> float:
    """1 + (t0 - 1)(1 - p) for the annealing progress p clamped to [0, 1]: t0 at 0, 1 at 1."""
    return 1.0 + (t0 - 1.0) * (1.0 - min(max(progress, 0.0), 1.0))


def geometric_temperature(t0: float, progress: float) -> float:
    """t0^(1 - p) for the annealing progress p clamped to [0, 1]: t0 at 0, 1 at 1."""
    return t0 ** (1.0 - min(max(progress, 0.0), 1.0))


class TemperedTarget(Target):
    """pi^(1/T) of a base target: log density, score and both together divided by T."""

    def __init__(self, base: Target, temperature: float) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.base = base
        self.temperature = temperature
        self.dim = base.dim
        self.name = f"{base.name}^(1/T)"
        self.device = base.device

    def to(self, device: str | torch.device) -> TemperedTarget:
        """Move the base target to `device`; returns self."""
        self.base.to(device)
        self.device = self.base.device
        return self

    def log_prob(self, x: Tensor) -> Tensor:
        """log pi(x) / T."""
        return self.base.log_prob(x) / self.temperature

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """log pi(x) / T and grad log pi(x) / T, from one call of the base target."""
        log_prob, score = self.base.log_prob_and_score(x)
        return log_prob / self.temperature, score / self.temperature

    def score(self, x: Tensor) -> Tensor:
        """grad log pi(x) / T."""
        return self.base.score(x) / self.temperature


@contextmanager
def tempered(sampler: Sampler, temperature: float) -> Iterator[Sampler]:
    """Within the block, `sampler` sees its target at `temperature` (untouched when T == 1)."""
    if temperature == 1.0:
        yield sampler
        return
    original = sampler.target
    sampler.target = TemperedTarget(original, temperature)
    try:
        yield sampler
    finally:
        sampler.target = original


class Annealing:
    """The temperature of each training iteration under an `AnnealingConfig` (module docstring).

    `temperature(i)` is the T of iteration i; `observe(ess)` reports that iteration's training
    ESS (used by the adaptive schedule only); `state()` / `load_state()` carry the adaptive
    schedule's state through checkpoints as JSON-able data.
    """

    def __init__(self, config: AnnealingConfig) -> None:
        self.config = config
        self.current = config.t0 if config.schedule == "adaptive" else 1.0
        self.window_ess: list[float] = []

    def temperature(self, iteration: int) -> float:
        """T of the 0-based training iteration `iteration`."""
        c = self.config
        if c.schedule == "none":
            return 1.0
        if c.iterations is None:  # only the adaptive schedule may run without it
            return self.current
        length = c.fraction * c.iterations
        progress = iteration / length if length > 0 else 1.0
        if c.schedule == "adaptive":
            return 1.0 if progress >= 1.0 else self.current
        if c.schedule == "linear":
            return linear_temperature(c.t0, progress)
        return geometric_temperature(c.t0, progress)

    def observe(self, ess: float) -> None:
        """Record one training iteration's normalised ESS; may lower the adaptive T."""
        c = self.config
        if c.schedule != "adaptive" or self.current == 1.0:
            return
        self.window_ess.append(ess)
        if len(self.window_ess) == c.window:
            if sum(self.window_ess) / c.window >= c.threshold:
                self.current = max(1.0, self.current * c.factor)
            self.window_ess = []

    def state(self) -> dict[str, Any]:
        """The schedule's mutable state (JSON-able)."""
        return {"temperature": self.current, "window_ess": list(self.window_ess)}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned."""
        self.current = float(state["temperature"])
        self.window_ess = [float(v) for v in state["window_ess"]]
