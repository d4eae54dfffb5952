"""The diffusion samplers as rows of PAPER.md §1's table, on the shared integrator."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from targets.base import Target
from trainers.config import TrainerConfig
from trainers.integrator import Loss, Rollout, Sampler
from trainers.network import ControlNetwork
from trainers.prior import GaussianMixturePrior
from trainers.time_schedule import TimeSchedule


class DIS(Sampler):
    """The time-reversed diffusion sampler (DIS) on a learnable prior.

    Base drift a = grad log p_phi (Langevin noising towards the prior), forward control u = the
    PIS-grad network, backward control v = 0.
    """

    def __init__(
        self,
        prior: GaussianMixturePrior,
        target: Target,
        schedule: TimeSchedule,
        network: ControlNetwork,
        *,
        loss: Loss = "rkl",
        checkpoint_steps: bool = False,
        compile_step: bool = False,
    ) -> None:
        super().__init__(
            prior,
            target,
            schedule,
            loss=loss,
            checkpoint_steps=checkpoint_steps,
            compile_step=compile_step,
        )
        self.network = network
        self.needs_target_score = network.score_net is not None

    def step_terms(self) -> tuple[Tensor, ...]:
        """The network's time terms at t_n = n / N, n = 0..N."""
        n_steps = self.schedule.n_steps
        ref = self.schedule.shape
        t = torch.arange(n_steps + 1, device=ref.device, dtype=ref.dtype) / n_steps
        return tuple(term for term in self.network.time_terms(t) if term is not None)

    def base_drift(
        self, x: Tensor, target_score: Tensor | None, terms: tuple[Tensor, ...]
    ) -> Tensor:
        """grad log p_phi(x)."""
        return self.prior.score(x)

    def forward_control(
        self, x: Tensor, target_score: Tensor | None, terms: tuple[Tensor, ...]
    ) -> Tensor:
        """The network's control at this step."""
        score_scale = terms[1] if len(terms) > 1 else None
        return self.network.control(x, terms[0], score_scale, target_score)


def _build_dis(
    config: TrainerConfig,
    prior: GaussianMixturePrior,
    target: Target,
    generator: torch.Generator | None,
) -> Sampler:
    return DIS(
        prior,
        target,
        TimeSchedule(config.time, target.dim),
        ControlNetwork(target.dim, config.network, generator),
        loss=config.loss,
        checkpoint_steps=config.checkpoint_steps,
        compile_step=config.compile,
    )


SAMPLERS: dict[str, Callable[..., Sampler]] = {"dis": _build_dis}


def build_sampler(
    config: TrainerConfig,
    prior: GaussianMixturePrior,
    target: Target,
    generator: torch.Generator | None = None,
) -> Sampler:
    """The sampler `config.sampler` on `prior` and `target`; `generator` initialises networks."""
    return SAMPLERS[config.sampler](config, prior, target, generator)


__all__ = ["DIS", "SAMPLERS", "Rollout", "Sampler", "build_sampler"]
