"""Target annealing: schedules' closed forms, the ESS-adaptive rule, the tempered target, the
trainer (bit-identical at T = 1, evaluation at T = 1, exact resume) and a separated mixture."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from tests.configs import assert_same_parameters, mixture, tiny
from tests.trainers.helpers import scaled_gaussian
from trainers import Trainer, load
from trainers.annealing import Annealing, TemperedTarget, tempered
from trainers.config import AnnealingConfig


def temperatures(config: dict, n: int) -> list[float]:
    annealing = Annealing(AnnealingConfig.model_validate(config))
    return [annealing.temperature(i) for i in range(n)]


def test_linear_schedule_closed_form_reaches_one_at_the_fraction():
    values = temperatures({"schedule": "linear", "t0": 5.0, "fraction": 0.5, "iterations": 80}, 80)
    assert values[0] == 5.0
    assert values[10] == pytest.approx(4.0) and values[20] == pytest.approx(3.0)
    assert values[30] == pytest.approx(2.0)
    assert all(a > b for a, b in itertools.pairwise(values[:41]))
    assert values[40:] == [1.0] * 40


def test_geometric_schedule_closed_form_reaches_one_at_the_fraction():
    config = {"schedule": "geometric", "t0": 16.0, "fraction": 0.25, "iterations": 160}
    values = temperatures(config, 160)
    assert values[0] == 16.0
    assert values[10] == pytest.approx(8.0) and values[20] == pytest.approx(4.0)
    assert values[30] == pytest.approx(2.0)
    assert values[40:] == [1.0] * 120


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"schedule": "linear", "t0": 5.0, "fraction": 0.0, "iterations": 10},
        {"schedule": "geometric", "t0": 1.0, "iterations": 10},
        {"schedule": "adaptive", "t0": 1.0},
    ],
)
def test_schedules_that_stay_at_one(config):
    assert temperatures(config, 10) == [1.0] * 10


def test_adaptive_lowers_t_only_after_a_window_with_mean_ess_above_threshold():
    config = {"schedule": "adaptive", "t0": 5.0, "threshold": 0.5, "factor": 0.5, "window": 3}
    annealing = Annealing(AnnealingConfig.model_validate(config))
    seen = []
    windows = [[0.9, 0.2, 0.3], [0.1, 0.9, 0.8], [0.6] * 3, [0.0] * 3, [1.0] * 3, [0.9]]
    for ess in [value for window in windows for value in window]:
        annealing.observe(ess)
        seen.append(annealing.temperature(0))
        if len(seen) == 4:  # mid-window: the state holds the window so far
            assert annealing.state() == {"temperature": 5.0, "window_ess": [0.1]}
    # Window means 0.47 (one value above the threshold is not enough), 0.6, 0.6, 0, 1:
    # T halves after the 2nd, 3rd and 5th windows, clamped at 1.
    assert seen[:5] == [5.0] * 5
    assert seen[5:8] == [2.5] * 3
    assert seen[8:14] == [1.25] * 6
    assert seen[14:] == [1.0] * 2
    assert annealing.state() == {"temperature": 1.0, "window_ess": []}


def test_adaptive_reaches_one_at_the_fraction_at_the_latest():
    config = {"schedule": "adaptive", "t0": 6.0, "fraction": 0.4, "iterations": 10}
    annealing = Annealing(AnnealingConfig.model_validate(config))
    for _ in range(10):
        annealing.observe(0.01)  # below the threshold: the ESS never lets T fall
    assert temperatures(config, 10) == [6.0] * 4 + [1.0] * 6
    assert [annealing.temperature(i) for i in (3, 4)] == [6.0, 1.0]


def test_schedule_needs_the_run_length_and_rejects_bad_values():
    with pytest.raises(ValidationError, match=r"annealing\.iterations .* required"):
        AnnealingConfig(schedule="geometric")
    for bad in ({"t0": 0.5}, {"fraction": 1.5}, {"factor": 1.0}, {"threshold": 0.0}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            AnnealingConfig.model_validate(bad)


def test_tempered_gaussian_is_the_gaussian_with_t_times_the_variance():
    base = scaled_gaussian()
    temperature = 3.0
    target = TemperedTarget(base, temperature)
    x = torch.randn(7, base.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mean, var = base.buffer("mean", x), base.buffer("std", x).square()
    log_prob, score = target.log_prob_and_score(x)
    torch.testing.assert_close(score, -(x - mean) / (temperature * var))
    torch.testing.assert_close(target.score(x), score)
    # log pi^(1/T) = log N(x; m, T s^2) + const: differences between points agree.
    wide = torch.distributions.Normal(mean, torch.sqrt(temperature * var)).log_prob(x).sum(-1)
    torch.testing.assert_close(log_prob - log_prob[0], wide - wide[0])
    torch.testing.assert_close(target.log_prob(x), base.log_prob(x) / temperature)


NO_SCORE = {"hidden": 8, "n_time_features": 4, "use_target_score": False}


def test_tempered_rollout_changes_only_the_target_term_of_the_log_weights():
    trainer = Trainer(tiny(network=NO_SCORE))
    sampler, target = trainer.sampler, trainer.counted_target
    with torch.no_grad():
        plain = sampler.rollout(50, torch.Generator().manual_seed(3))
        with tempered(sampler, 4.0):
            assert isinstance(sampler.target, TemperedTarget)
            hot = sampler.rollout(50, torch.Generator().manual_seed(3))
    assert sampler.target is target
    assert torch.equal(plain.x, hot.x)
    expected = plain.log_weights + (1 / 4.0 - 1) * target.log_prob(plain.x)
    torch.testing.assert_close(hot.log_weights, expected)
    with tempered(sampler, 1.0):
        assert sampler.target is target
    with pytest.raises(RuntimeError), tempered(sampler, 2.0):
        raise RuntimeError
    assert sampler.target is target


@pytest.mark.parametrize(
    "annealing",
    [
        {"schedule": "linear", "t0": 1.0, "iterations": 5},
        {"schedule": "geometric", "t0": 8.0, "fraction": 0.0, "iterations": 5},
        {"schedule": "adaptive", "t0": 1.0, "threshold": 0.01, "window": 1},
    ],
)
def test_annealing_at_t_one_trains_bit_identically(annealing):
    plain, annealed = Trainer(tiny()), Trainer(tiny(annealing=annealing))
    plain.train(5)
    annealed.train(5)
    assert plain.history == annealed.history
    assert annealed.history["temperature"] == [1.0] * 5
    assert_same_parameters(plain, annealed)


def test_training_reports_its_temperature_and_evaluation_is_at_t_one():
    config = tiny(annealing={"schedule": "geometric", "t0": 9.0, "fraction": 0.5, "iterations": 4})
    trainer = Trainer(config)
    metrics = trainer.train(2)
    assert trainer.history["temperature"] == [9.0, pytest.approx(3.0)]
    assert metrics["temperature"] == pytest.approx(3.0) and 0 < metrics["ess"] <= 1
    assert trainer.sampler.target is trainer.counted_target
    tensors, meta = trainer.state()
    meta["config"]["annealing"] = {"schedule": "none"}
    untempered = Trainer.from_state(tensors, meta)
    assert trainer.evaluate().metrics == untempered.evaluate().metrics
    trainer.train(6)
    assert trainer.history["temperature"][2:] == [1.0] * 6


def test_tempered_drift_trains_identically_with_checkpointed_steps():
    # MCD's drift reads grad log pi and differentiates it (Hessian-vector products) in the
    # backward pass, where checkpointed steps are recomputed: both must see pi^(1/T).
    annealing = {"schedule": "geometric", "t0": 9.0, "fraction": 1.0, "iterations": 3}
    plain = Trainer(tiny(sampler="mcd", annealing=annealing))
    checkpointed = Trainer(tiny(sampler="mcd", annealing=annealing, checkpoint_steps=True))
    plain.train(3)
    checkpointed.train(3)
    assert plain.history == checkpointed.history
    assert_same_parameters(plain, checkpointed)


def test_resume_with_the_adaptive_schedule_is_bitwise_identical(tmp_path: Path):
    config = tiny(
        annealing={"schedule": "adaptive", "t0": 4.0, "threshold": 0.05, "factor": 0.9, "window": 2}
    )
    reference = Trainer(config)
    reference.train(5)
    reference.save(tmp_path / "ckpt")
    saved_state = reference.annealing.state()
    reference.train(6)
    resumed = load(tmp_path / "ckpt")
    assert resumed.annealing.state() == saved_state
    resumed.train(6)
    assert resumed.history == reference.history
    assert resumed.annealing.state() == reference.annealing.state()
    assert_same_parameters(resumed, reference)
    # The schedule moved on both sides of the checkpoint.
    steps = reference.history["temperature"]
    assert len(set(steps[:6])) > 1 and len(set(steps[5:])) > 1


ITERATIONS = 150


def _mixture_run(annealing: dict) -> tuple[Trainer, float, dict[str, float]]:
    """A single learned Gaussian + DIS on four separated modes: (trainer, sample variance at
    a third of the budget, final evaluation at T = 1)."""
    config = mixture(batch_size=128, prior={"k_max": 1, "init_std": 2.0}, annealing=annealing)
    trainer = Trainer(config)
    trainer.train(ITERATIONS // 3)
    spread = float(trainer.evaluate().samples.var(0).sum())
    trainer.train(ITERATIONS - ITERATIONS // 3)
    return trainer, spread, trainer.evaluate().metrics


@pytest.mark.slow
def test_tempered_training_on_separated_modes_spreads_then_ends_at_t_one():
    annealing = {"schedule": "geometric", "t0": 20.0, "fraction": 0.6, "iterations": ITERATIONS}
    _, plain_spread, plain = _mixture_run({})
    hot, hot_spread, annealed = _mixture_run(annealing)
    # At a third of the budget T = 20^(1 - 50/90) ~ 3.8: the samples spread wider.
    assert hot.history["temperature"][ITERATIONS // 3 - 1] > 3.5
    assert hot_spread > 1.05 * plain_spread
    assert hot.history["temperature"][90:] == [1.0] * (ITERATIONS - 90)
    for metrics in (plain, annealed):
        assert math.isfinite(metrics["elbo"]) and 0 <= metrics["emc"] <= 1
    print(
        f"\nvariance at 1/3: plain {plain_spread:.1f}, annealed {hot_spread:.1f}; "
        f"EMC: plain {plain['emc']:.3f}, annealed {annealed['emc']:.3f}; "
        f"ELBO: plain {plain['elbo']:.3f}, annealed {annealed['elbo']:.3f}"
    )
