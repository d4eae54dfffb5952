"""DIS on targets with known log Z: unbiased weights, a valid bound, a tight one after training."""

from __future__ import annotations

import math

import pytest
import torch

from tests.configs import small as small_config
from tests.trainers.helpers import ScaledGaussian, bound_holds, scaled_gaussian
from trainers import Trainer
from trainers.prior import GaussianMixturePrior
from trainers.samplers import build_sampler


@pytest.mark.parametrize(
    ("k_max", "per_dim_friction", "schedule"),
    [(1, False, "cosine"), (2, True, "linear"), (3, False, "per_step")],
)
def test_importance_weights_are_unbiased(k_max: int, per_dim_friction: bool, schedule: str) -> None:
    """E[w] = Z for any parameters: checks every normalising term of log w."""
    target = ScaledGaussian([0.3, -0.2], [0.9, 1.2], log_Z=1.7)
    config = small_config(
        time={
            "n_steps": 4,
            "init_dt": 0.1,
            "schedule": schedule,
            "per_dim_friction": per_dim_friction,
        },
        network={"hidden": 16, "n_time_features": 8},
    )
    gen = torch.Generator().manual_seed(0)
    prior = GaussianMixturePrior(k_max, 2, k_max, init_std=1.0, init_mean_std=0.5, generator=gen)
    sampler = build_sampler(config, prior, target, gen).double()
    with torch.no_grad():  # a non-trivial control and friction, not the ~0 initialisation
        sampler.network.state_net[-1].weight.normal_(0, 0.1, generator=gen)
        sampler.network.state_net[-1].bias.normal_(0, 0.1, generator=gen)
        sampler.schedule.raw_sigma2.add_(0.3)
    _, log_w = sampler.sample(200_000, torch.Generator().manual_seed(1))
    w = torch.exp(log_w - log_w.max())
    log_mean_w = float(torch.log(w.mean()) + log_w.max())
    std_err = float(w.std() / w.mean()) / math.sqrt(len(w))
    assert abs(log_mean_w - target.log_Z) < 4 * std_err + 1e-3
    assert float(log_w.mean()) < target.log_Z


@pytest.mark.slow  # trains to a known answer: 20-35 s
def test_training_reaches_log_z_and_never_exceeds_it() -> None:
    target = scaled_gaussian()
    trainer = Trainer(small_config(), target=target)
    horizon = trainer.train(0)["time_horizon"]
    for _ in range(3):
        trainer.train(50)
        result = trainer.evaluate()
        std = float(result.log_weights.std())
        assert bound_holds(result.metrics, std, len(result.log_weights), target.log_Z)
    assert abs(result.metrics["elbo"] - target.log_Z) < 0.1
    assert result.metrics["delta_log_z"] < 0.05
    assert abs(result.metrics["time_horizon"] - horizon) > 0.05 * horizon


@pytest.mark.slow  # trains to a known answer: 20-35 s
def test_log_variance_loss_trains() -> None:
    target = scaled_gaussian()
    trainer = Trainer(small_config(loss="logvar"), target=target)
    before = trainer.evaluate().metrics["elbo"]
    trainer.train(150)
    result = trainer.evaluate()
    std = float(result.log_weights.std())
    assert bound_holds(result.metrics, std, len(result.log_weights), target.log_Z)
    assert before < target.log_Z - 3
    assert abs(result.metrics["elbo"] - target.log_Z) < 0.2
    assert result.metrics["delta_log_z"] < 0.05


@pytest.mark.slow  # trains to a known answer: 20-35 s
def test_fixed_prior_diffusion_transports_alone() -> None:
    """With a frozen N(0, I) prior only the diffusion can move mass onto the target."""
    target = scaled_gaussian()
    trainer = Trainer(small_config(prior={"learn": False}), target=target)
    means = trainer.prior.means.detach().clone()
    before = trainer.evaluate().metrics["elbo"]
    trainer.train(100)
    result = trainer.evaluate()
    std = float(result.log_weights.std())
    assert bound_holds(result.metrics, std, len(result.log_weights), target.log_Z)
    assert before < target.log_Z - 3 and result.metrics["elbo"] > target.log_Z - 1
    assert torch.equal(trainer.prior.means, means)
