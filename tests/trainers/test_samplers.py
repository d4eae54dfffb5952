"""MCD, CMCD and DBS (and DIS where cheap) on the shared integrator: their rows of the definition
table, exact gradients, unbiased weights, tight bounds on a known log Z, betas, exact resume."""

from __future__ import annotations

import math
import multiprocessing
import statistics
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch

from tests.configs import TINY_IMR as IMR
from tests.configs import assert_same_parameters, coverage_run, tiny
from tests.configs import small as small_config
from tests.trainers.helpers import ScaledGaussian, bound_holds, scaled_gaussian
from trainers import Trainer, TrainerConfig, build_sampler, load
from trainers.drift import BetaSchedule
from trainers.prior import GaussianMixturePrior
from trainers.samplers import CMCD, DBS, DIS, MCD, AnnealedLangevinSampler, Sampler

ANNEALED = ["mcd", "cmcd", "dbs"]
TWO_D = ScaledGaussian([0.3, -0.2], [0.9, 1.2], log_Z=1.7)


def perturbed_sampler(
    sampler: str, drift: dict | None = None, network: dict | None = None, n_steps: int = 4
) -> Sampler:
    """A float64 sampler on TWO_D with a 2-component prior and non-trivial controls and betas."""
    config = TrainerConfig.model_validate(
        {
            "sampler": sampler,
            "drift": drift or {},
            "time": {"n_steps": n_steps, "init_dt": 0.1},
            "network": {"hidden": 16, "n_time_features": 8, **(network or {})},
        }
    )
    gen = torch.Generator().manual_seed(0)
    prior = GaussianMixturePrior(2, 2, 2, init_std=1.0, init_mean_std=0.5, generator=gen)
    model = build_sampler(config, prior, TWO_D, gen).double()
    with torch.no_grad():  # away from the ~0 initialisation of controls and the linear betas
        for name, param in model.named_parameters():
            if "state_net" in name or "score_net" in name or name.startswith("betas."):
                param.normal_(0, 1.0 if name.startswith("betas.") else 0.3, generator=gen)
        model.schedule.raw_sigma2.add_(0.3)
    return model


# The definition table of PAPER.md §1.
@pytest.mark.parametrize(
    ("sampler", "drift", "cls"),
    [
        ("dis", {}, DIS),
        ("mcd", {}, MCD),
        ("cmcd", {}, CMCD),
        ("dbs", {}, DBS),
        ("dbs", {"dbs_base_drift": "zero"}, DBS),
        ("dbs", {"dbs_base_drift": "target"}, DBS),
        ("cmcd", {"score_clip": 0.3}, CMCD),
    ],
)
def test_each_sampler_is_its_row_of_the_table(sampler: str, drift: dict, cls: type) -> None:
    model = perturbed_sampler(sampler, drift)
    assert type(model) is cls
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    score = TWO_D.score(x)
    prior_score = model.prior.score(x)
    rows = model.step_terms().rows(5)
    assert len(rows) == 5  # points n = 0..N
    drifts = [model.base_drift(x, score, row) for row in rows]
    max_norm = drift.get("score_clip", math.inf) * math.sqrt(2)
    norm = score.norm(dim=-1, keepdim=True)
    clipped = torch.where(norm > max_norm, score * max_norm / norm, score)
    assert max_norm == math.inf or (norm > max_norm).any()
    kind = drift.get("dbs_base_drift", "annealed")
    if sampler == "dis":
        expected = [prior_score] * 5
    elif kind == "annealed":
        betas = model.betas().detach()
        expected = [b * clipped + (1 - b) * prior_score for b in betas]
        torch.testing.assert_close(drifts[0], prior_score)
        torch.testing.assert_close(drifts[-1], clipped)
    else:
        expected = [clipped if kind == "target" else torch.zeros_like(x)] * 5
    for got, want in zip(drifts, expected, strict=True):
        torch.testing.assert_close(got, want)

    u, v = model.controls(x, score, rows[2], True, True)
    for got, want in (
        (u, model.forward_control(x, score, rows[2])),
        (v, model.backward_control(x, score, rows[2])),
    ):
        assert (got is None and want is None) or torch.equal(got, want)
    if sampler == "dis":
        assert v is None and u.abs().sum() > 0
    elif sampler == "mcd":
        assert u is None and v.abs().sum() > 0
    elif sampler == "cmcd":
        assert torch.equal(v, -u) and u.abs().sum() > 0
    else:
        assert u.abs().sum() > 0 and v.abs().sum() > 0 and not torch.allclose(u, -v)
        assert model.forward_network is not model.backward_network


def test_a_sampler_rejects_the_wrong_networks() -> None:
    model = perturbed_sampler("dbs")
    with pytest.raises(ValueError, match=r"MCD takes networks \('backward',\)"):
        MCD(model.prior, TWO_D, model.schedule, TrainerConfig().drift, model.forward_network)


@pytest.mark.parametrize(
    ("sampler", "drift"),
    [
        ("mcd", {}),
        ("cmcd", {"score_clip": 0.3}),
        ("dbs", {}),
        ("dbs", {"dbs_base_drift": "zero"}),
        ("dbs", {"dbs_base_drift": "target"}),
    ],
)
def test_importance_weights_are_unbiased(sampler: str, drift: dict) -> None:
    """E[w] = Z for any parameters: every normalising term of log w is right."""
    model = perturbed_sampler(sampler, drift, network={"use_target_score": True})
    _, log_w = model.sample(200_000, torch.Generator().manual_seed(1))
    w = torch.exp(log_w - log_w.max())
    log_mean_w = float(torch.log(w.mean()) + log_w.max())
    std_err = float(w.std() / w.mean()) / math.sqrt(len(w))
    assert abs(log_mean_w - TWO_D.log_Z) < 4 * std_err + 1e-3
    assert float(log_w.mean()) < TWO_D.log_Z


@pytest.mark.parametrize(
    ("sampler", "drift", "exact"),
    [
        ("dis", {}, True),
        ("mcd", {}, True),
        ("cmcd", {"score_clip": 0.3}, True),
        ("dbs", {}, True),
        ("dbs", {"dbs_base_drift": "target"}, True),
        ("mcd", {"differentiate_score": False}, False),
    ],
)
def test_gradient_is_the_derivative_of_the_elbo_estimate(
    sampler: str, drift: dict, exact: bool
) -> None:
    """Autograd through the trajectory (incl. the target score's Hessian) vs central differences.

    The networks get no detached score input here: that input is, by design, not differentiated.
    """
    model = perturbed_sampler(sampler, drift, network={"use_target_score": False})
    params = [p for p in model.parameters() if p.requires_grad]

    def mean_log_w() -> torch.Tensor:
        return model.rollout(64, torch.Generator().manual_seed(5)).log_weights.mean()

    grads = torch.autograd.grad(mean_log_w(), params)
    gen = torch.Generator().manual_seed(6)
    direction = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    analytic = float(sum((g * d).sum() for g, d in zip(grads, direction, strict=True)))
    h = 1e-5
    values = []
    with torch.no_grad():
        for sign in (1, -2, 1):  # +h, -h, back to 0
            for p, d in zip(params, direction, strict=True):
                p.add_(sign * h * d)
            values.append(float(mean_log_w()))
    numeric = (values[0] - values[1]) / (2 * h)
    if exact:
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-7)
    else:
        assert abs(analytic - numeric) > 1e-2


# Betas.
def test_betas_run_from_zero_to_one_monotonically_and_learn() -> None:
    schedule = BetaSchedule(8)
    torch.testing.assert_close(schedule(), torch.linspace(0, 1, 9))
    with torch.no_grad():
        schedule.raw_increments.copy_(torch.tensor([-30.0, 5, -3, 0, 20, -20, 1, 2]))
    betas = schedule()
    assert betas[0] == 0 and betas[-1] == 1 and (betas.diff() >= 0).all()

    config = small_config(sampler="mcd", optim={"lr_time": 0.05, "lr_network": 1e-3})
    trainer = Trainer(config, target=scaled_gaussian())
    betas_module = trainer.sampler.betas
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    assert lr_of[id(betas_module.raw_increments)] == 0.05  # the betas train with lr_time
    trainer.sampler.loss_and_gradients(64, torch.Generator().manual_seed(0))
    grad = betas_module.raw_increments.grad
    assert grad is not None and grad.abs().min() > 0
    before = betas_module().detach()
    trainer.train(20)
    after = betas_module().detach()
    assert after[0] == 0 and after[-1] == 1 and (after.diff() > 0).all()
    assert (after - before).abs().max() > 1e-3


def test_fixed_betas_stay_linear() -> None:
    trainer = Trainer(tiny(sampler="cmcd", drift={"learn_betas": False}))
    trainer.train(3)
    betas = trainer.sampler.betas
    assert not betas.raw_increments.requires_grad
    torch.testing.assert_close(betas(), torch.linspace(0, 1, 5))
    in_optimizer = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(betas.raw_increments) not in in_optimizer


# Training.
@pytest.mark.slow  # trains to a known answer: 20-30 s per sampler
@pytest.mark.parametrize("sampler", ANNEALED)
def test_training_on_a_gmp_reaches_log_z_and_never_exceeds_it(sampler: str) -> None:
    target = scaled_gaussian()
    trainer = Trainer(
        small_config(sampler=sampler, prior={"k_max": 2, "init_mean_std": 1.0}), target=target
    )
    for _ in range(2):
        trainer.train(50)
        result = trainer.evaluate()
        std = float(result.log_weights.std())
        assert bound_holds(result.metrics, std, len(result.log_weights), target.log_Z)
    assert isinstance(trainer.sampler, AnnealedLangevinSampler)
    assert abs(result.metrics["elbo"] - target.log_Z) < 0.1
    assert result.metrics["delta_log_z"] < 0.05


@pytest.mark.slow  # trains to a known answer: 20-30 s per sampler
@pytest.mark.parametrize("sampler", ANNEALED)
def test_fixed_gaussian_prior_baseline_trains(sampler: str) -> None:
    """K = 1 and frozen at N(0, I): only the diffusion can move mass onto the target."""
    target = scaled_gaussian()
    trainer = Trainer(small_config(sampler=sampler, prior={"learn": False}), target=target)
    means = trainer.prior.means.detach().clone()
    before = trainer.evaluate().metrics["elbo"]
    trainer.train(150)
    result = trainer.evaluate()
    std = float(result.log_weights.std())
    assert bound_holds(result.metrics, std, len(result.log_weights), target.log_Z)
    assert result.metrics["elbo"] > target.log_Z - 1 and result.metrics["elbo"] > before + 1
    assert torch.equal(trainer.prior.means, means)


# State.
@pytest.mark.parametrize("sampler", ANNEALED)
def test_resume_is_bitwise_identical(sampler: str, tmp_path: Path) -> None:
    reference = Trainer(tiny(sampler=sampler, **IMR))
    reference.train(3)
    tensors, meta = reference.state()
    reference.save(tmp_path / "ckpt")
    reference.train(4)
    for resumed in (Trainer.from_state(tensors, meta), load(tmp_path / "ckpt")):
        assert resumed.iteration == 3
        resumed.train(4)
        assert resumed.history == reference.history
        assert resumed.imr_events == reference.imr_events
        assert_same_parameters(resumed, reference)


@pytest.mark.parametrize("sampler", ANNEALED)
def test_checkpointed_steps_and_logvar_loss(sampler: str) -> None:
    plain = Trainer(tiny(sampler=sampler, drift={"score_clip": 1.0}))
    checkpointed = Trainer(tiny(sampler=sampler, drift={"score_clip": 1.0}, checkpoint_steps=True))
    plain.train(3)
    checkpointed.train(3)
    assert plain.history == checkpointed.history
    assert_same_parameters(plain, checkpointed)
    logvar = Trainer(tiny(sampler=sampler, loss="logvar"))
    metrics = logvar.train(3)
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["elbo"])


# Mode coverage.


COVERAGE_SEEDS = (0, 1, 2)


def _mean(runs: list[dict[str, float]], key: str) -> float:
    return statistics.fmean(run[key] for run in runs)


@pytest.fixture(scope="module")
def two_processes() -> Iterator[ProcessPoolExecutor]:
    """Two worker processes (one thread each) for independent training runs, shared by the
    mode-coverage tests so that each does not pay for starting them."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield pool


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ANNEALED)
def test_imr_covers_the_modes_where_a_learned_gaussian_does_not(
    sampler: str, two_processes: ProcessPoolExecutor
) -> None:
    # A MALA chain finds a far mode only if it starts near it, so one seed covers all four modes
    # or three by chance (and a machine's rounding decides which): the claim over IMR is over
    # seeds. A learned Gaussian covers one or two of the four whatever the seed: one run.
    runs = [(sampler, 4, True, seed) for seed in COVERAGE_SEEDS] + [(sampler, 1, False, 0)]
    metrics = list(two_processes.map(coverage_run, *zip(*runs, strict=True)))
    mixture, gaussian = metrics[: len(COVERAGE_SEEDS)], metrics[len(COVERAGE_SEEDS) :]
    assert _mean(mixture, "emc") >= 0.9
    assert _mean(gaussian, "emc") < 0.75
    assert _mean(mixture, "elbo") > _mean(gaussian, "elbo") + 0.5
