"""The diffusion samplers as rows of PAPER.md §1's table, on the shared integrator.

| sampler | base drift a_n                     | forward control u | backward control v |
| DIS     | grad log p_phi                     | network           | 0                  |
| MCD     | annealed Langevin (betas)          | 0                 | network            |
| CMCD    | annealed Langevin                  | network           | minus that network |
| DBS     | annealed Langevin, zero, or target | network           | second network     |
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from targets.base import Target
from trainers.config import DriftConfig, TrainerConfig
from trainers.drift import BetaSchedule, clip_score, drift_target_score
from trainers.integrator import IntegratorOptions, Sampler, StepTerms
from trainers.network import ControlNetwork, TimeTerms
from trainers.prior import GaussianMixturePrior
from trainers.time_schedule import TimeSchedule


def _network_terms(network: ControlNetwork, schedule: TimeSchedule) -> TimeTerms:
    """The network's time terms at steps n = 0..N."""
    ref = schedule.shape
    return network.time_terms(network.step_times(schedule.n_steps, ref.device, ref.dtype))


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
        options: IntegratorOptions | None = None,
    ) -> None:
        super().__init__(prior, target, schedule, options)
        self.network = network
        self.needs_target_score = network.score_net is not None

    def step_terms(self) -> StepTerms:
        """The network's time terms at steps n = 0..N and the prior's score terms."""
        return StepTerms(
            forward=_network_terms(self.network, self.schedule), prior=self.prior.score_terms()
        )

    def base_drift(self, x: Tensor, target_score: Tensor | None, terms: StepTerms) -> Tensor:
        """grad log p_phi(x)."""
        return self.prior.score(x, terms.prior)

    def forward_control(self, x: Tensor, target_score: Tensor | None, terms: StepTerms) -> Tensor:
        """The network's control at this step."""
        assert terms.forward is not None
        return self.network.control(x, terms.forward, target_score)


class AnnealedLangevinSampler(Sampler):
    """A sampler whose base drift is annealed Langevin: MCD, CMCD and DBS.

    a_n(x) = beta_n grad log pi(x) + (1 - beta_n) grad log p_phi(x) (`drift.dbs_base_drift`
    may replace it by zero or grad log pi). The betas are learnable (`drift.learn_betas`); the
    target score in the drift is optionally norm-clipped and differentiated through x. Controls
    come from `forward_network` (u) and `backward_network` (v), fed the detached, clipped target
    score where they take it; a missing network is a zero control. Subclasses say which
    networks they own (`roles`).
    """

    roles: ClassVar[tuple[str, ...]] = ()  # which of "forward", "backward" have a network

    def __init__(
        self,
        prior: GaussianMixturePrior,
        target: Target,
        schedule: TimeSchedule,
        drift: DriftConfig,
        forward_network: ControlNetwork | None = None,
        backward_network: ControlNetwork | None = None,
        options: IntegratorOptions | None = None,
    ) -> None:
        super().__init__(prior, target, schedule, options)
        given = tuple(
            role
            for role, net in (("forward", forward_network), ("backward", backward_network))
            if net is not None
        )
        if given != self.roles:
            raise ValueError(f"{type(self).__name__} takes networks {self.roles}, got {given}")
        self.forward_network = forward_network
        self.backward_network = backward_network
        self.score_clip = drift.score_clip
        self.differentiate_score = drift.differentiate_score
        self.base_drift_kind = self.drift_kind(drift)
        annealed = self.base_drift_kind == "annealed"
        self.betas = BetaSchedule(schedule.n_steps, drift.learn_betas) if annealed else None
        networks = (forward_network, backward_network)
        self.needs_target_score = self.base_drift_kind != "zero" or any(
            net is not None and net.score_net is not None for net in networks
        )

    @classmethod
    def drift_kind(cls, drift: DriftConfig) -> str:
        """Which base drift this sampler uses: "annealed", "zero" or "target"."""
        return "annealed"

    def step_terms(self) -> StepTerms:
        """beta_n and the prior's score terms (if annealed) and each network's time terms at
        steps n = 0..N."""
        annealed = self.betas is not None
        return StepTerms(
            beta=self.betas() if annealed else None,
            forward=self._terms_of(self.forward_network),
            backward=self._terms_of(self.backward_network),
            prior=self.prior.score_terms() if annealed else None,
        )

    def _terms_of(self, network: ControlNetwork | None) -> TimeTerms | None:
        """`network`'s time terms at steps n = 0..N (None without a network)."""
        return None if network is None else _network_terms(network, self.schedule)

    def base_drift(self, x: Tensor, target_score: Tensor | None, terms: StepTerms) -> Tensor:
        """beta_n grad log pi(x) + (1 - beta_n) grad log p_phi(x), or zero, or grad log pi(x)."""
        if self.base_drift_kind == "zero":
            return torch.zeros_like(x)
        if target_score is None:
            raise ValueError("the annealed base drift needs the target score")
        score = drift_target_score(
            x, target_score, self.target, self.score_clip, self.differentiate_score
        )
        if terms.beta is None:
            return score
        return torch.lerp(self.prior.score(x, terms.prior), score, terms.beta)

    def forward_control(
        self, x: Tensor, target_score: Tensor | None, terms: StepTerms
    ) -> Tensor | None:
        """The forward network's control (None without one)."""
        return self._network_control(self.forward_network, terms.forward, x, target_score)

    def backward_control(
        self, x: Tensor, target_score: Tensor | None, terms: StepTerms
    ) -> Tensor | None:
        """The backward network's control (None without one)."""
        return self._network_control(self.backward_network, terms.backward, x, target_score)

    def _network_control(
        self,
        network: ControlNetwork | None,
        terms: TimeTerms | None,
        x: Tensor,
        target_score: Tensor | None,
    ) -> Tensor | None:
        """`network`'s control at this step, fed the target score detached and clipped like
        the drift's (None without a network)."""
        if network is None or terms is None:
            return None
        score = None if target_score is None else clip_score(target_score, self.score_clip)
        return network.control(x, terms, score)


class MCD(AnnealedLangevinSampler):
    """Monte Carlo Diffusion: uncontrolled annealed Langevin forward, learned backward v."""

    roles = ("backward",)


class CMCD(AnnealedLangevinSampler):
    """Controlled Monte Carlo Diffusion: forward control u = network, backward v = -u."""

    roles = ("forward",)

    def backward_control(self, x: Tensor, target_score: Tensor | None, terms: StepTerms) -> Tensor:
        """-u_n(x)."""
        return -self.forward_control(x, target_score, terms)

    def controls(
        self,
        x: Tensor,
        target_score: Tensor | None,
        terms: StepTerms,
        forward: bool,
        backward: bool,
    ) -> tuple[Tensor | None, Tensor | None]:
        """(u, -u) from one network evaluation."""
        u = self.forward_control(x, target_score, terms) if forward or backward else None
        return (u if forward else None), (-u if backward else None)


class DBS(AnnealedLangevinSampler):
    """Diffusion Bridge Sampler: forward and backward controls from two networks.

    The base drift is `drift.dbs_base_drift`: annealed Langevin, zero, or grad log pi.
    """

    roles = ("forward", "backward")

    @classmethod
    def drift_kind(cls, drift: DriftConfig) -> str:
        """`drift.dbs_base_drift`."""
        return drift.dbs_base_drift


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
        IntegratorOptions.from_config(config),
    )


def _annealed_builder(cls: type[AnnealedLangevinSampler]) -> Callable[..., Sampler]:
    """The builder of `cls`: one network per role, by default without the target score input.

    As in the authors' code: the base drift already holds grad log pi, and a detached score
    input makes the reparameterised gradient miss its dependence on x.
    """

    def build(
        config: TrainerConfig,
        prior: GaussianMixturePrior,
        target: Target,
        generator: torch.Generator | None,
    ) -> Sampler:
        network = config.network.with_defaults(use_target_score=False, score_scale_init=0.0)
        networks = {
            f"{role}_network": ControlNetwork(target.dim, network, generator) for role in cls.roles
        }
        return cls(
            prior,
            target,
            TimeSchedule(config.time, target.dim),
            config.drift,
            **networks,
            options=IntegratorOptions.from_config(config),
        )

    return build


SAMPLERS: dict[str, Callable[..., Sampler]] = {
    "dis": _build_dis,
    "mcd": _annealed_builder(MCD),
    "cmcd": _annealed_builder(CMCD),
    "dbs": _annealed_builder(DBS),
}


def build_sampler(
    config: TrainerConfig,
    prior: GaussianMixturePrior,
    target: Target,
    generator: torch.Generator | None = None,
) -> Sampler:
    """The sampler `config.sampler` on `prior` and `target`; `generator` initialises networks."""
    return SAMPLERS[config.sampler](config, prior, target, generator)
