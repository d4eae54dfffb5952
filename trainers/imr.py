"""Iterative Model Refinement (PAPER.md §3): when to add a mixture component, and where.

Candidates come from batched MALA on the target, one work item per active component, run
through an injected `executor(fn, items)` (builtin `map` in-process; Ray tasks in the
orchestrator). A work item's chains start from draws of its component, from the sampler's
samples its component explains best, or over a region that covers the target (its own share of
the step's support starts): only the last reaches modes far from the current prior in high
dimension. Work items and their results are plain data (numbers, strings, numpy arrays) so
that they pickle to other processes; a worker rebuilds the target from its registry name. Work
items run on the CPU, in the prior's dtype, whatever the device of the trainer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

import targets
from targets.base import SupportRegion, Target
from trainers.config import IMRConfig, MalaConfig
from trainers.counting import CountingTarget
from trainers.mala import ascend, langevin_burn_in, run_mala

Executor = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]
"""`executor(fn, items)` -> the results `fn(item)`, in any order (builtin `map` qualifies)."""

TARGET_CACHE_SIZE = 8
"""Targets a worker process keeps built between work items."""


class MixturePrior(Protocol):
    """What IMR needs of the Gaussian-mixture prior (see `trainers.prior`)."""

    means: Tensor
    active: Tensor

    @property
    def scales(self) -> Tensor: ...

    def component_log_prob(self, x: Tensor) -> Tensor: ...

    def log_prob(self, x: Tensor) -> Tensor: ...


ScoreFn = Callable[[Tensor, Target, MixturePrior], Tensor]
"""(candidates [n, d], target, prior) -> score [n]; the highest score becomes the new mean."""


@dataclass(frozen=True)
class MalaWorkItem:
    """One component's MALA run, as plain data."""

    component: int
    target_name: str
    target_kwargs: dict[str, Any]
    init_states: np.ndarray
    """chain starting points [n_chains, d], float64"""
    mala: dict[str, Any]
    """`MalaConfig` fields"""
    seed: int
    dtype: str
    """torch dtype name the chains run in, e.g. "float32\""""


@dataclass(frozen=True)
class MalaCandidates:
    """The final chain states of one work item and how its sampler behaved."""

    component: int
    states: np.ndarray
    """[n_chains, d], float64"""
    acceptance: float
    step_size: float
    """adapted step size (mean over chains)"""
    distance: float
    """mean distance of a chain's final state from its start"""
    target_evals: int
    """points at which log rho and its gradient were evaluated"""


@dataclass(frozen=True)
class Proposal:
    """Where to put the new component, and a JSON-able account of how it was chosen."""

    mean: Tensor
    scale: Tensor
    n_work_items: int
    record: dict[str, Any]


def imr_due(iteration: int, cfg: IMRConfig, n_active: int, k_max: int) -> bool:
    """Whether iteration `iteration` (counted from 1) adds a component: every `cfg.interval`."""
    return cfg.enabled and n_active < k_max and iteration % cfg.interval == 0


def target_over_prior(x: Tensor, target: Target, prior: MixturePrior) -> Tensor:
    """log rho(x) - log p_phi(x): high where the target has mass the prior does not cover."""
    return target.log_prob(x) - prior.log_prob(x)


def capped_target_over_prior(tau: float) -> ScoreFn:
    """log rho(x) - max(log p_phi(x), max_x' log p_phi(x') - tau) over the candidates x': the
    prior's term is capped `tau` nats below its largest value, so among candidates the prior
    misses the target density decides (GMMVI's rule)."""

    def score(x: Tensor, target: Target, prior: MixturePrior) -> Tensor:
        prior_log_prob = prior.log_prob(x)
        floor = prior_log_prob.nan_to_num(nan=-math.inf).max() - tau
        return target.log_prob(x) - torch.maximum(prior_log_prob, floor)

    return score


def selection_score(cfg: IMRConfig) -> ScoreFn:
    """The candidate score that `cfg.selection` names."""
    return capped_target_over_prior(cfg.tau) if cfg.selection == "capped" else target_over_prior


def run_mala_item(item: MalaWorkItem, target: Target | None = None) -> MalaCandidates:
    """Run one work item's chains on `target` (default: built from the item's name): the
    burn-in, if any, MALA, and the gradient ascent, if any."""
    target = CountingTarget(target or _cached_target(item.target_name, item.target_kwargs))
    cfg = MalaConfig(**item.mala)
    x0 = torch.tensor(item.init_states, dtype=getattr(torch, item.dtype))  # a copy: read-only
    generator = torch.Generator().manual_seed(item.seed)
    start = x0
    if cfg.burn_in_steps:
        x0 = langevin_burn_in(
            target.log_prob_and_score,
            x0,
            n_steps=cfg.burn_in_steps,
            step_size=cfg.burn_in_step_size or cfg.step_size,
            max_move=cfg.burn_in_max_move,
            generator=generator,
        )
    result = run_mala(
        target.log_prob_and_score,
        x0,
        n_steps=cfg.n_steps,
        step_size=cfg.step_size,
        target_accept=cfg.target_accept,
        n_adapt=int(cfg.adapt_fraction * cfg.n_steps),
        per_chain=cfg.per_chain,
        generator=generator,
    )
    final = result.x
    if cfg.ascent_steps:
        final = ascend(
            target.log_prob_and_score, final, n_steps=cfg.ascent_steps, step_size=cfg.step_size
        )
    return MalaCandidates(
        component=item.component,
        states=final.to(torch.float64).numpy(),
        acceptance=result.acceptance,
        step_size=float(result.step_size.mean()),
        distance=float(torch.linalg.vector_norm(final - start, dim=-1).mean()),
        target_evals=target.evaluations,
    )


def propose_component(
    prior: MixturePrior,
    target: Target,
    cfg: IMRConfig,
    executor: Executor = map,
    seed: int = 0,
    samples: Tensor | None = None,
    *,
    init_std: float | None = None,
    score_fn: ScoreFn | None = None,
) -> Proposal:
    """Mean and scale of a new component: the best-scoring MALA candidate over all work items.

    One work item per active component; where its chains start is `cfg.chain_starts` (see
    `chain_starts`; "samples" needs `samples` [B, d]). The score is `score_fn`, by default the
    one `cfg.selection` names. The scale is `init_std` (needed for cfg.new_std "init" and
    "laplace", normally `PriorConfig.init_std`), the mean scale of the active components
    ("mean_active") or the target's Laplace scale at the new mean ("laplace", see
    `laplace_scale`). A target not built by `targets.make` can only be run by the in-process
    default executor (`map`). Deterministic for `seed`.
    """
    scale = _new_scale(prior, cfg, init_std)  # before the MALA runs: a bad config fails fast
    items = work_items(prior, target, cfg, seed, samples)
    results = sorted(executor(_runner(target, executor), items), key=lambda r: r.component)
    counted = CountingTarget(target)  # the evaluations of selection and scale
    choice = select_candidate(results, counted, prior, score_fn or selection_score(cfg))
    if cfg.new_std == "laplace":
        scale = laplace_scale(counted, choice.winner[0], fallback=scale)
    record = {
        **choice.record(results),
        "scale": {
            "min": float(scale.min()),
            "mean": float(scale.mean()),
            "max": float(scale.max()),
        },
        "chain_starts": cfg.chain_starts,
        "target_evals": sum(r.target_evals for r in results) + counted.evaluations,
        **landing(target, prior, choice.winner),
    }
    return Proposal(choice.winner[0].clone(), scale, len(items), record)


@dataclass(frozen=True)
class CandidateChoice:
    """The MALA candidates of every work item, their scores, and the best one."""

    scores: Tensor
    """[n] selection scores (NaN counted as -inf)"""
    owners: Tensor
    """[n] the component whose work item produced each candidate"""
    best: int
    winner: Tensor
    """[1, d] the best candidate"""
    target_log_prob: float
    prior_log_prob: float

    def record(self, results: list[MalaCandidates]) -> dict[str, Any]:
        """The choice as JSON-able data, with how each work item fared."""
        return {
            "score": float(self.scores[self.best]),
            "winner_component": int(self.owners[self.best]),
            "target_log_prob": self.target_log_prob,
            "prior_log_prob": self.prior_log_prob,
            "items": [
                {
                    "component": r.component,
                    "acceptance": r.acceptance,
                    "step_size": r.step_size,
                    "distance": r.distance,
                    "target_evals": r.target_evals,
                    "best_score": float(self.scores[self.owners == r.component].max()),
                }
                for r in results
            ],
        }


def select_candidate(
    results: list[MalaCandidates], target: Target, prior: MixturePrior, score_fn: ScoreFn
) -> CandidateChoice:
    """The highest-scoring final MALA state over all work items' `results`; fails when no
    candidate has a finite score."""
    states = np.concatenate([r.states for r in results])
    candidates = torch.as_tensor(states, dtype=prior.means.dtype, device=prior.means.device)
    owners = torch.cat([torch.full((len(r.states),), r.component) for r in results])
    with torch.no_grad():
        scores = score_fn(candidates, target, prior).cpu()
        scores = torch.where(torch.isnan(scores), -math.inf, scores)
        best = int(scores.argmax())
        winner = candidates[best : best + 1]
        target_log_prob = float(target.log_prob(winner))
        prior_log_prob = float(prior.log_prob(winner))
    if not math.isfinite(float(scores[best])):
        raise RuntimeError("IMR found no MALA candidate with a finite score")
    return CandidateChoice(scores, owners, best, winner, target_log_prob, prior_log_prob)


def work_items(
    prior: MixturePrior,
    target: Target,
    cfg: IMRConfig,
    seed: int,
    samples: Tensor | None = None,
) -> list[MalaWorkItem]:
    """One MALA work item per active component, as plain data, deterministic for `seed`."""
    components = prior.active.nonzero().flatten().tolist()
    generator = torch.Generator().manual_seed(seed)
    made = target.make_args or {"name": target.name, "kwargs": {}}
    support = cfg.support or target.support()
    return [
        MalaWorkItem(
            component=k,
            target_name=str(made["name"]),
            target_kwargs=dict(made["kwargs"]),
            init_states=chain_starts(prior, k, cfg, generator, samples, support),
            mala=cfg.mala.model_dump(),
            seed=int(np.random.SeedSequence([seed, k]).generate_state(1)[0]),
            dtype=str(prior.means.dtype).removeprefix("torch."),
        )
        for k in components
    ]


def landing(target: Target, prior: MixturePrior, winner: Tensor) -> dict[str, Any]:
    """Where the target knows its modes: the mode a new mean `winner` [1, d] lies in, and
    whether an active component's mean already lay in it; else nothing."""
    if target.n_modes is None:
        return {}
    active_means = prior.means[prior.active].detach()
    mode = int(target.mode_of(winner)[0])
    covered = {int(m) for m in target.mode_of(active_means).tolist()}
    return {"mode": mode, "mode_already_covered": mode in covered}


def _runner(target: Target, executor: Executor) -> Callable[[MalaWorkItem], MalaCandidates]:
    """The function the executor maps over work items (in-process: on `target` itself)."""
    if executor is map:
        return lambda item: run_mala_item(item, target)
    if target.make_args is not None:
        return run_mala_item
    raise ValueError(
        f"target {target.name!r} was not built by targets.make, so a worker cannot rebuild it; "
        "build it with targets.make(name, **kwargs) or use the in-process executor (map)"
    )


def _new_scale(prior: MixturePrior, cfg: IMRConfig, init_std: float | None) -> Tensor:
    """Per-dimension scale [d] of the new component (for "laplace": its fallback)."""
    scales = prior.scales.detach()
    if cfg.new_std == "mean_active":
        return scales[prior.active].mean(dim=0)
    if init_std is None:
        raise ValueError(
            f'IMR with new_std="{cfg.new_std}" needs init_std (the PriorConfig.init_std)'
        )
    return torch.full_like(scales[0], init_std)


def log_density_curvature(target: Target, x: Tensor) -> Tensor:
    """The Hessian diagonal of log rho at one point `x` [d]: d2 log rho / dx_i2, shape [d]."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(target.log_prob(x[None]).sum(), x, create_graph=True)
        eye = torch.eye(len(x), dtype=x.dtype, device=x.device)
        (rows,) = torch.autograd.grad(grad, x, grad_outputs=eye, is_grads_batched=True)
    return rows.diagonal().detach()


def laplace_scale(target: Target, x: Tensor, fallback: Tensor) -> Tensor:
    """Per-dimension scale [d] of a Gaussian fitted to rho's curvature at `x`: where
    d2 log rho / dx_i2 < 0 it is (-d2 log rho / dx_i2)^(-1/2) (exact for a Gaussian target, at
    any x), elsewhere `fallback`."""
    precision = -log_density_curvature(target, x)
    usable = torch.isfinite(precision) & (precision > 0)
    return torch.where(usable, precision.clamp_min(torch.finfo(x.dtype).tiny).rsqrt(), fallback)


def chain_starts(
    prior: MixturePrior,
    component: int,
    cfg: IMRConfig,
    generator: torch.Generator,
    samples: Tensor | None = None,
    support: SupportRegion | None = None,
) -> np.ndarray:
    """Starting points [cfg.mala.n_chains, d] (float64) for the chains of `component`.

    "support": draws from `support` (each work item its own); "samples": those of `samples`
    that `component` explains best, drawn with replacement; "component" (and "samples" where
    the component explains none): draws of the component itself.
    """
    n_chains = cfg.mala.n_chains
    dim = prior.means.shape[-1]
    if cfg.chain_starts == "support":
        return (support or SupportRegion()).sample(n_chains, dim, generator).numpy()
    if cfg.chain_starts == "samples":
        if samples is None:
            raise ValueError('IMR chain_starts "samples" needs the sampler\'s samples')
        owner = prior.component_log_prob(samples).argmax(dim=-1)
        mine = samples[owner == component].detach()
        if len(mine):
            pick = torch.randint(len(mine), (n_chains,), generator=generator)
            return mine[pick.to(mine.device)].to("cpu", torch.float64).numpy()
    mean = prior.means[component].detach().to("cpu", torch.float64)
    scale = prior.scales[component].detach().to("cpu", torch.float64)
    eps = torch.randn(n_chains, len(mean), generator=generator, dtype=torch.float64)
    return (mean + scale * eps).numpy()


_TARGETS: dict[str, Target] = {}


def _cached_target(name: str, kwargs: dict[str, Any]) -> Target:
    """`targets.make(name, **kwargs)`, built once per process (up to TARGET_CACHE_SIZE kept)."""
    key = json.dumps([name, kwargs], sort_keys=True, default=repr)
    if key not in _TARGETS:
        if len(_TARGETS) >= TARGET_CACHE_SIZE:
            del _TARGETS[next(iter(_TARGETS))]
        _TARGETS[key] = targets.make(name, **kwargs)
    return _TARGETS[key]
