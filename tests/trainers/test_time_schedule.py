"""Time discretisation: the schedule shapes of PAPER.md §1 and the learnable dt and friction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainers.config import TimeConfig
from trainers.time_schedule import TimeSchedule, schedule_shape


def test_cosine_shape_matches_the_formula() -> None:
    n_steps, m, c = 10, 0.01, 0.008
    t = (n_steps - np.arange(n_steps)) / n_steps
    expected = (1 - m) * np.cos(np.pi / 2 * (1 + c - t) / (1 + c)) ** 2 + m
    np.testing.assert_allclose(schedule_shape("cosine", n_steps).numpy(), expected, rtol=1e-14)
    assert expected[0] == pytest.approx(1, abs=1e-3) and np.all(np.diff(expected) < 0)


def test_linear_and_constant_shapes() -> None:
    np.testing.assert_allclose(schedule_shape("linear", 4).numpy(), [1, 0.7525, 0.505, 0.2575])
    np.testing.assert_allclose(schedule_shape("constant", 3).numpy(), [1, 1, 1])
    with pytest.raises(ValueError, match="unknown time schedule"):
        schedule_shape("geometric", 3)


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant", "per_step"])
def test_dt_horizon_and_eta(kind: str) -> None:
    config = TimeConfig(n_steps=8, schedule=kind, init_dt=0.05, init_sigma2=2.0)
    schedule = TimeSchedule(config, dim=3)
    dt = schedule.dt().detach()
    torch.testing.assert_close(dt, 0.05 * schedule_shape(kind, 8).float())
    torch.testing.assert_close(schedule.horizon().detach(), dt.sum())
    torch.testing.assert_close(schedule.eta().detach(), 2.0 * dt)
    n_dt = 8 if kind == "per_step" else 1
    assert schedule.raw_dt.shape == (n_dt,)


def test_per_dimension_friction_and_frozen_parameters() -> None:
    config = TimeConfig(n_steps=5, per_dim_friction=True, learn_dt=False, learn_friction=False)
    schedule = TimeSchedule(config, dim=4)
    assert schedule.eta().shape == (5, 4)
    assert not schedule.raw_dt.requires_grad and not schedule.raw_sigma2.requires_grad
    learned = TimeSchedule(TimeConfig(n_steps=5), dim=4)
    learned.horizon().backward()
    assert learned.raw_dt.grad is not None and float(learned.raw_dt.grad) > 0


def test_learned_friction_starts_where_sigma2_does_and_moves_as_its_inverse() -> None:
    """With the friction learned (the authors' code), sigma2 = 1 / softplus(raw): the same eta
    at the start, and d sigma2 / d raw = -sigmoid(raw) sigma2^2 instead of sigmoid(raw)."""
    ours = TimeSchedule(TimeConfig(n_steps=6, init_sigma2=2.0, per_dim_friction=True), dim=3)
    authors = TimeSchedule(
        TimeConfig(n_steps=6, init_sigma2=2.0, per_dim_friction=True, learned_value="friction"),
        dim=3,
    )
    torch.testing.assert_close(authors.eta(), ours.eta())
    authors.sigma2().sum().backward()
    ours.sigma2().sum().backward()
    raw_friction = authors.raw_friction.detach()
    torch.testing.assert_close(authors.raw_friction.grad, -torch.sigmoid(raw_friction) * 4.0)
    torch.testing.assert_close(ours.raw_sigma2.grad, torch.sigmoid(ours.raw_sigma2.detach()))
    assert not hasattr(authors, "raw_sigma2")
