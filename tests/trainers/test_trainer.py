"""Trainer: determinism, exact resume (in memory and through files), IMR, devices, dtypes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.configs import TINY_IMR as IMR
from tests.configs import assert_same_parameters, tiny
from trainers import Trainer, load


def test_same_seed_same_run_bitwise() -> None:
    a, b = Trainer(tiny()), Trainer(tiny())
    a.train(5)
    b.train(5)
    assert a.history == b.history
    assert_same_parameters(a, b)
    c = Trainer(tiny(seed=1))
    c.train(5)
    assert c.history["loss"] != a.history["loss"]


NO_SCORE = {"network": {"hidden": 8, "n_time_features": 4, "use_target_score": False}}


@pytest.mark.parametrize("overrides", [{}, IMR, NO_SCORE, {"loss": "logvar", "dtype": "float64"}])
def test_resume_from_state_is_bitwise_identical(overrides: dict) -> None:
    reference = Trainer(tiny(**overrides))
    reference.train(3)
    tensors, meta = reference.state()
    reference.train(4)
    resumed = Trainer.from_state(tensors, meta)
    assert resumed.iteration == 3
    resumed.train(4)
    assert resumed.history == reference.history
    assert resumed.imr_events == reference.imr_events
    assert_same_parameters(resumed, reference)


def test_resume_through_files_is_bitwise_identical(tmp_path: Path) -> None:
    reference = Trainer(tiny(**IMR))
    reference.train(3)
    reference.save(tmp_path / "ckpt")
    reference.train(3)
    resumed = load(tmp_path / "ckpt")
    resumed.train(3)
    assert resumed.history == reference.history
    assert_same_parameters(resumed, reference)
    assert resumed.prior.n_active == reference.prior.n_active == 3


def test_checkpointed_steps_train_identically() -> None:
    plain, checkpointed = Trainer(tiny()), Trainer(tiny(checkpoint_steps=True))
    plain.train(3)
    checkpointed.train(3)
    assert plain.history == checkpointed.history
    assert_same_parameters(plain, checkpointed)


def test_evaluation_leaves_the_training_stream_alone() -> None:
    a, b = Trainer(tiny()), Trainer(tiny())
    a.train(2)
    first = a.evaluate()
    again = a.evaluate()
    a.train(2)
    b.train(4)
    assert a.history == b.history
    assert torch.equal(first.samples, again.samples)
    assert first.samples.shape == (64, 3) and first.log_weights.shape == (64,)
    assert {"elbo", "log_z", "ess", "delta_log_z", "time_horizon"} <= first.metrics.keys()


def test_imr_adds_components_and_resets_their_moments() -> None:
    trainer = Trainer(tiny(**IMR))
    assert trainer.prior.n_active == 1
    trainer.train(2)
    assert trainer.prior.n_active == 2
    event = trainer.imr_events[0]
    assert event["iteration"] == 2 and event["slot"] == 1 and event["n_work_items"] == 1
    for param in (trainer.prior.means, trainer.prior.raw_scales):
        state = trainer.optimizer.state[param]
        assert (state["exp_avg"][1] == 0).all() and (state["exp_avg_sq"][1] == 0).all()
    torch.testing.assert_close(trainer.prior.scales[1], torch.ones(3))
    trainer.train(4)
    assert trainer.prior.n_active == 3 and len(trainer.imr_events) == 2
    result = trainer.evaluate()
    assert set(result.components.tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("use_score", [False, True])
def test_target_evaluations_are_counted_apart_for_training_and_imr(use_score: bool) -> None:
    """DIS evaluates log rho at x_N (and, fed the score, grad log rho at each of the N steps);
    evaluation is not counted; IMR counts its chains' steps, its candidates and the winner."""
    config = tiny(network={"hidden": 8, "n_time_features": 4, "use_target_score": use_score}, **IMR)
    trainer = Trainer(config)
    trainer.train(1)
    per_iteration = 32 * (1 + (4 if use_score else 0))
    assert trainer.counted_target.evaluations == per_iteration
    trainer.evaluate()
    metrics = trainer.train(1)  # the second iteration runs IMR: one work item of 4 chains
    assert metrics["target_evals"] == 2 * per_iteration
    assert metrics["imr_target_evals"] == 4 * (5 + 1) + 4 + 1
    assert trainer.imr_events[0]["target_evals"] == metrics["imr_target_evals"]
    resumed = Trainer.from_state(*trainer.state())
    assert resumed.evaluate().metrics["target_evals"] == 2 * per_iteration
    assert resumed.imr_target_evals == trainer.imr_target_evals


def test_the_rollout_that_samples_start_imr_chains_counts_as_imr_not_training() -> None:
    imr = {**IMR["imr"], "chain_starts": "samples"}
    trainer = Trainer(tiny(**NO_SCORE, prior={"k_max": 3}, imr=imr))
    metrics = trainer.train(2)  # IMR after iteration 2: a rollout of 32, one item of 4 chains
    assert metrics["target_evals"] == 2 * 32
    assert metrics["imr_target_evals"] == 32 + 4 * (5 + 1) + 4 + 1


def test_param_groups_and_gradient_cleaning() -> None:
    config = tiny(optim={"lr_network": 1e-3, "lr_prior": 2e-2, "lr_time": 3e-2, "grad_clip": 0.5})
    trainer = Trainer(config)
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert lr_of[id(trainer.prior.means)] == 2e-2
    assert lr_of[id(trainer.sampler.schedule.raw_dt)] == 3e-2
    assert lr_of[id(trainer.sampler.network.state_input.weight)] == 1e-3
    for param in trainer.sampler.parameters():
        param.grad = torch.full_like(param, 10.0)
    trainer.prior.means.grad[0, 0] = torch.nan
    norm = trainer._clean_and_clip_gradients()
    assert norm > 0.5
    grads = [p.grad for p in trainer.sampler.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)
    assert trainer.prior.means.grad[0, 0] == 0
    total = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
    assert float(total) == pytest.approx(0.5, rel=1e-5)


def test_gradient_clipping_by_value_clips_each_element() -> None:
    """The authors' optax.clip: every element in [-c, c], smaller ones untouched."""
    trainer = Trainer(tiny(optim={"grad_clip": 0.5, "grad_clip_mode": "value"}))
    params = list(trainer.sampler.parameters())
    for i, param in enumerate(params):
        param.grad = torch.linspace(-3.0, 3.0, param.numel()).reshape(param.shape) * (i + 1)
    before = [p.grad.clone() for p in params]
    norm = trainer._clean_and_clip_gradients()
    expected = torch.linalg.vector_norm(torch.cat([g.flatten() for g in before]))
    assert norm == pytest.approx(float(expected), rel=1e-5)
    for old, param in zip(before, params, strict=True):
        torch.testing.assert_close(param.grad, old.clamp(-0.5, 0.5))


def test_device_auto_and_float64() -> None:
    trainer = Trainer(tiny(device="auto", dtype="float64"))
    assert trainer.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert all(p.dtype == torch.float64 for p in trainer.sampler.parameters())
    metrics = trainer.train(3)
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    x, log_w = trainer.sample(10)
    assert x.dtype == log_w.dtype == torch.float64 and x.device.type == trainer.device.type
