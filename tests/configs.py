"""Trainer configurations shared by the tests, and helpers that compare trainers.

`tiny` is the smallest trainer that still exercises everything (many iterations per second);
`small` learns a 2-d target in a few hundred iterations (DIS known-answer tests); `mixture` is
the set-up of the mode-coverage tests on four separated 2-d modes (GMM4). Overrides replace
top-level settings whole, as `TrainerConfig.model_validate({**BASE, **overrides})`.
"""

from __future__ import annotations

from typing import Any

import torch

from trainers import Trainer, TrainerConfig

TINY: dict[str, Any] = {
    "target": {"name": "funnel", "kwargs": {"dim": 3}},
    "batch_size": 32,
    "eval_samples": 64,
    "time": {"n_steps": 4},
    "network": {"hidden": 8, "n_time_features": 4},
}
TINY_IMR: dict[str, Any] = {
    "prior": {"k_max": 3},
    "imr": {"enabled": True, "interval": 2, "mala": {"n_chains": 4, "n_steps": 5}},
}
"""Overrides that make `tiny` grow a mixture by IMR every other iteration."""

SMALL: dict[str, Any] = {
    "batch_size": 256,
    "eval_samples": 2000,
    "time": {"n_steps": 16, "init_dt": 0.05},
    "network": {"hidden": 32, "n_time_features": 16},
    "optim": {"lr_network": 1e-3, "lr_prior": 5e-2, "lr_time": 1e-2},
}

GMM4: dict[str, Any] = {
    "name": "gmm40",
    "kwargs": {"dim": 2, "n_modes": 4, "half_width": 10.0, "seed": 11},
}
"""Four separated modes in 2-d: a single Gaussian cannot cover them."""
MIXTURE: dict[str, Any] = {
    "target": GMM4,
    "batch_size": 256,
    "eval_samples": 1000,
    "time": {"n_steps": 16, "init_dt": 0.3},
    "network": {"hidden": 32, "n_time_features": 16},
    "optim": {"lr_network": 1e-3, "lr_prior": 5e-2},
}


def tiny(**overrides: Any) -> TrainerConfig:
    """A trainer configuration small enough for many iterations per second."""
    return TrainerConfig.model_validate({**TINY, **overrides})


def small(**overrides: Any) -> TrainerConfig:
    """The small DIS configuration of the known-answer tests, with top-level overrides."""
    return TrainerConfig.model_validate({**SMALL, **overrides})


def mixture(**overrides: Any) -> TrainerConfig:
    """The mode-coverage set-up on GMM4, with top-level overrides (prior, imr, annealing...)."""
    return TrainerConfig.model_validate({**MIXTURE, **overrides})


def parameters(trainer: Trainer) -> dict[str, torch.Tensor]:
    """A detached copy of the trainer's sampler parameters and buffers."""
    return {k: v.detach().clone() for k, v in trainer.sampler.state_dict().items()}


def assert_same_parameters(a: Trainer, b: Trainer) -> None:
    """The two trainers' samplers are bitwise equal."""
    pa, pb = parameters(a), parameters(b)
    assert pa.keys() == pb.keys()
    for key in pa:
        assert torch.equal(pa[key], pb[key]), key


COVERAGE_ITERATIONS = 150  # IMR has added all four components by iteration 90


def coverage_run(sampler: str, k_max: int, imr: bool, seed: int) -> dict[str, float]:
    """Metrics after COVERAGE_ITERATIONS on four separated 2-d modes (IMR every 30), one torch
    thread: independent runs go to processes of their own (a pool's worker imports this)."""
    torch.set_num_threads(1)
    config = mixture(
        sampler=sampler,
        seed=seed,
        prior={"k_max": k_max, "init_std": 3.0},
        imr={"enabled": imr, "interval": 30, "mala": {"n_chains": 512, "n_steps": 100}},
    )
    trainer = Trainer(config)
    trainer.train(COVERAGE_ITERATIONS)
    assert trainer.prior.n_active == k_max
    return trainer.evaluate().metrics
