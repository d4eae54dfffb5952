"""IMR: schedule, candidate proposal on a multi-modal target, work items through executors."""

import dataclasses
import json
import math
import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch

import targets
from targets.base import Target
from tests.trainers.helpers import scaled_gaussian
from trainers.config import IMRConfig, MalaConfig
from trainers.imr import (
    MalaWorkItem,
    capped_target_over_prior,
    imr_due,
    laplace_scale,
    propose_component,
    run_mala_item,
    selection_score,
    target_over_prior,
    work_items,
)
from trainers.prior import GaussianMixturePrior

TARGET_KWARGS = {"dim": 2, "n_modes": 4}
COVERED = 2  # the prior's tight component sits on this mode of the target


@pytest.mark.parametrize(
    ("iteration", "enabled", "n_active", "k_max", "due"),
    [
        (1000, True, 1, 5, True),
        (3000, True, 4, 5, True),
        (999, True, 1, 5, False),
        (1001, True, 1, 5, False),
        (1000, True, 5, 5, False),
        (1000, False, 1, 5, False),
    ],
)
def test_imr_due_every_interval_until_k_max(iteration, enabled, n_active, k_max, due):
    cfg = IMRConfig(enabled=enabled, interval=1000)
    assert imr_due(iteration, cfg, n_active, k_max) is due


def _gmm():
    return targets.make("gmm40", **TARGET_KWARGS)


def _modes(target) -> torch.Tensor:
    return target.buffer("means", torch.zeros((), dtype=torch.float64))


def _prior(target, dtype=torch.float64, k_max: int = 4) -> GaussianMixturePrior:
    """Component 0: N(mode COVERED, 1); component 1: N(0, 30^2 I), broad over all modes."""
    prior = GaussianMixturePrior(k_max, 2, k_init=1, init_std=1.0)
    with torch.no_grad():
        prior.means[0] = _modes(target)[COVERED].float()
    prior.activate(torch.zeros(2), 30.0)
    return prior.to(dtype)


class RecordingExecutor:
    """Builtin map that remembers the items it was given."""

    def __init__(self) -> None:
        self.items: list[MalaWorkItem] = []

    def __call__(self, fn, items):
        self.items = list(items)
        return map(fn, self.items)


IMR = IMRConfig(enabled=True, new_std="mean_active", mala=MalaConfig(n_chains=64, n_steps=200))


def test_proposal_lands_on_an_uncovered_mode():
    gmm = _gmm()
    prior = _prior(gmm)
    proposal = propose_component(prior, gmm, IMR, seed=0)
    modes = _modes(gmm)
    distances = (modes - proposal.mean).norm(dim=-1)
    # log rho - log p_phi favours, among the uncovered modes, the one the broad component
    # explains least: the farthest from its centre 0, mode 0 (|mean| = 41)
    assert int(modes.norm(dim=-1).argmax()) == 0 != COVERED
    assert int(distances.argmin()) == 0
    assert distances[0] < 2.0
    assert distances[COVERED] > 10.0
    # high target density: within 3 nats of the mode peak log(1/4) - log(2 pi)
    peak = -math.log(4) - math.log(2 * math.pi)
    assert float(gmm.log_prob(proposal.mean[None])) > peak - 3
    assert proposal.n_work_items == 2
    torch.testing.assert_close(proposal.scale, prior.scales[:2].mean(0).detach())
    record = json.loads(json.dumps(proposal.record))
    assert record["winner_component"] in (0, 1)
    assert [item["component"] for item in record["items"]] == [0, 1]
    assert all(0.3 < item["acceptance"] < 0.9 for item in record["items"])
    with torch.no_grad():
        score = gmm.log_prob(proposal.mean[None]) - prior.log_prob(proposal.mean[None])
    assert record["score"] == pytest.approx(float(score))


def test_executor_gets_one_plain_data_item_per_active_component():
    gmm = _gmm()
    prior = _prior(gmm, dtype=torch.float32, k_max=5)
    prior.activate(torch.tensor([5.0, 5.0]), 2.0)
    executor = RecordingExecutor()
    cfg = IMRConfig(new_std="init", mala=MalaConfig(n_chains=16, n_steps=20))
    proposal = propose_component(prior, gmm, cfg, executor, seed=1, init_std=1.5)
    assert proposal.n_work_items == 3
    assert [item.component for item in executor.items] == [0, 1, 2]
    assert torch.equal(proposal.scale, torch.full((2,), 1.5))
    for item in executor.items:
        assert item.target_name == "gmm40" and item.target_kwargs == TARGET_KWARGS
        assert item.init_states.shape == (16, 2) and item.init_states.dtype == "float64"
        assert item.dtype == "float32" and item.mala == cfg.mala.model_dump()
        # chains start from draws of their own component
        start_mean = torch.from_numpy(item.init_states).mean(0).float()
        spread = prior.scales[item.component].detach()
        assert ((start_mean - prior.means[item.component].detach()).abs() < spread).all()
    assert len({item.seed for item in executor.items}) == 3


def test_chains_start_from_the_samples_each_component_explains():
    gmm = _gmm()
    prior = _prior(gmm)
    gen = torch.Generator().manual_seed(0)
    # samples all near the covered mode: component 0 explains them, component 1 none
    samples = _modes(gmm)[COVERED] + 0.5 * torch.randn(50, 2, generator=gen, dtype=torch.float64)
    executor = RecordingExecutor()
    cfg = IMRConfig(chain_starts="samples", mala=MalaConfig(n_chains=32, n_steps=10))
    propose_component(prior, gmm, cfg, executor, seed=2, samples=samples, init_std=1.0)
    rows = {tuple(row) for row in samples.tolist()}
    assert all(tuple(row) in rows for row in executor.items[0].init_states.tolist())
    assert not any(tuple(row) in rows for row in executor.items[1].init_states.tolist())


def test_work_items_are_plain_data():
    gmm = _gmm()
    executor = RecordingExecutor()
    cfg = IMRConfig(mala=MalaConfig(n_chains=8, n_steps=30))
    propose_component(_prior(gmm), gmm, cfg, executor, seed=3, init_std=1.0)
    item = executor.items[0]
    rebuilt = MalaWorkItem(**dataclasses.asdict(item))
    unpickled = pickle.loads(pickle.dumps(item))
    reference = run_mala_item(item)
    for copy in (rebuilt, unpickled):
        again = run_mala_item(copy)
        assert (again.states == reference.states).all()
        assert again.acceptance == reference.acceptance


@pytest.mark.slow
def test_process_pool_gives_the_same_proposal_as_map():
    gmm = _gmm()
    prior = _prior(gmm)
    cfg = IMRConfig(new_std="mean_active", mala=MalaConfig(n_chains=32, n_steps=100))
    in_process = propose_component(prior, gmm, cfg, seed=4)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        pooled = propose_component(prior, gmm, cfg, pool.map, seed=4)
    assert torch.equal(pooled.mean, in_process.mean)
    assert pooled.record == in_process.record


class _Unregistered(Target):
    """A standard normal that `targets.make` does not know."""

    name = "unregistered"
    dim = 2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x.square().sum(-1)


def test_unregistered_targets_run_in_process_only():
    target = _Unregistered()
    prior = GaussianMixturePrior(2, 2, init_std=1.0).double()
    cfg = IMRConfig(mala=MalaConfig(n_chains=8, n_steps=20))
    proposal = propose_component(prior, target, cfg, seed=5, init_std=1.0)
    assert proposal.mean.shape == (2,) and torch.isfinite(proposal.mean).all()
    with pytest.raises(ValueError, match=r"targets\.make"):
        propose_component(prior, target, cfg, RecordingExecutor(), seed=5, init_std=1.0)


def test_new_std_init_needs_the_init_std():
    gmm = _gmm()
    with pytest.raises(ValueError, match="init_std"):
        propose_component(_prior(gmm), gmm, IMRConfig(new_std="init"), seed=6)


def test_laplace_scale_is_a_gaussian_targets_std_at_any_point():
    target = scaled_gaussian()
    std = target.buffer("std", torch.zeros((), dtype=torch.float64))
    fallback = torch.full((target.dim,), 7.0, dtype=torch.float64)
    points = torch.randn(3, target.dim, generator=torch.Generator().manual_seed(0)) * 10
    for x in points.double():
        torch.testing.assert_close(laplace_scale(target, x, fallback), std)


class _Saddle(Target):
    """log rho = -x0^2 / 8 + x1^2 / 2 - x2^4: curvature -1/4, +1 and, at x2 = 0, zero."""

    name = "saddle"
    dim = 3

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -x[:, 0].square() / 8 + x[:, 1].square() / 2 - x[:, 2].pow(4)


def test_laplace_scale_falls_back_where_the_density_is_not_concave():
    x = torch.tensor([3.0, -1.0, 0.0], dtype=torch.float64)
    fallback = torch.tensor([5.0, 6.0, 7.0], dtype=torch.float64)
    scale = laplace_scale(_Saddle(), x, fallback)
    assert scale.tolist() == pytest.approx([2.0, 6.0, 7.0])


def test_laplace_new_std_fits_the_mode_it_lands_on():
    gmm = _gmm()  # modes of std 1, tens apart
    cfg = IMR.model_copy(update={"new_std": "laplace"})
    proposal = propose_component(_prior(gmm), gmm, cfg, seed=0, init_std=3.0)
    assert (_modes(gmm) - proposal.mean).norm(dim=-1).min() < 2.0
    assert proposal.scale.tolist() == pytest.approx([1.0, 1.0], abs=0.05)
    with pytest.raises(ValueError, match='new_std="laplace" needs init_std'):
        propose_component(_prior(gmm), gmm, cfg, seed=0)


FAR_MODES = {"dim": 10, "n_modes": 4, "half_width": 20.0}  # modes ~ 35 apart in d = 10
FAR_MALA = MalaConfig(n_chains=32, n_steps=50, per_chain=True, burn_in_steps=50, ascent_steps=50)


@pytest.mark.parametrize("seed", range(4))
def test_support_starts_find_a_mode_that_component_starts_cannot_reach(seed):
    """The prior's one component sits on mode 0 of four separated modes in d = 10: chains from
    its draws never leave mode 0, chains from the target's box reach the others."""
    target = targets.make("gmm40", seed=seed, **FAR_MODES)
    prior = GaussianMixturePrior(2, 10, k_init=1, init_std=1.0).to(torch.float64)
    with torch.no_grad():
        prior.means[0] = _modes(target)[0]
    found = {}
    for starts in ("component", "support"):
        cfg = IMRConfig(enabled=True, chain_starts=starts, mala=FAR_MALA)
        record = propose_component(prior, target, cfg, seed=seed, init_std=1.0).record
        found[starts] = record
        assert record["chain_starts"] == starts
        item = record["items"][0]
        assert item["target_evals"] == 32 * (50 + 50 + 1 + 50)  # burn-in, MALA, ascent
        assert record["target_evals"] == item["target_evals"] + 32 + 1
    assert found["component"]["mode"] == 0 and found["component"]["mode_already_covered"]
    assert found["support"]["mode"] != 0 and not found["support"]["mode_already_covered"]
    assert found["support"]["items"][0]["distance"] > 10  # chains travelled from the box


def test_support_region_of_a_target_and_its_study_override():
    gmm = targets.make("gmm40", dim=3, half_width=40.0)
    assert gmm.support() == targets.SupportRegion("box", 40.0)
    assert targets.make("funnel", dim=4).support() == targets.SupportRegion("gaussian", 3.0)
    assert targets.make("credit").support() == targets.SupportRegion()
    box = targets.SupportRegion("box", 2.0, center=1.0).sample(4000, 3, torch.Generator())
    assert box.min() >= -1.0 and box.max() <= 3.0 and abs(float(box.mean()) - 1.0) < 0.05
    prior = GaussianMixturePrior(2, 3, k_init=1, init_std=1.0).to(torch.float64)
    cfg = IMRConfig(chain_starts="support", support={"shape": "box", "scale": 0.5})
    starts = np.concatenate([item.init_states for item in work_items(prior, gmm, cfg, 0)])
    assert np.abs(starts).max() <= 0.5


def test_capped_selection_lets_the_target_decide_among_points_the_prior_misses():
    """score = log rho - max(log p, max log p - tau), computed by hand for three points."""
    gmm = _gmm()
    prior = _prior(gmm)
    x = torch.stack([_modes(gmm)[COVERED], _modes(gmm)[0], _modes(gmm)[0] + 3.0])
    log_rho, log_p = gmm.log_prob(x), prior.log_prob(x)
    score = capped_target_over_prior(2.0)(x, gmm, prior)
    expected = log_rho - torch.maximum(log_p, log_p.max() - 2.0)
    torch.testing.assert_close(score, expected)
    assert score[1] > score[0]  # an uncovered mode's centre beats the covered one's
    # both uncovered points are capped: their difference is the target's alone
    torch.testing.assert_close(score[1] - score[2], log_rho[1] - log_rho[2])
    assert selection_score(IMRConfig(selection="ratio")) is target_over_prior
