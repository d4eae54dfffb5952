"""Bayesian targets: log densities against numpy/scipy re-implementations on the raw data files,
dtypes, batching, gradients (gradcheck, analytic score vs autograd), credit vs its reference
samples and brownian vs inference-gym's posterior summaries."""

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import expit, log_expit
from sklearn.datasets import load_breast_cancer

import targets
from targets.base import Target
from targets.brownian import OBSERVED_LOC
from targets.seeds import PLATES

DATA = Path(os.environ["GMP_DATA_DIR"])  # tests/conftest.py points it at the shared folder

CASES = [
    ("credit", None),
    ("credit", 10.0),
    ("cancer", None),
    ("ionosphere", 1.0),
    ("sonar", 1.0),
    ("seeds", None),
    ("brownian", None),
]
IDS = [f"{name}-prior{prior}" for name, prior in CASES]
DIMS = {"credit": 25, "cancer": 31, "ionosphere": 35, "sonar": 61, "seeds": 26, "brownian": 32}


@functools.cache
def _target(name: str, prior: float | None) -> Target:
    if name in ("seeds", "brownian"):
        return targets.make(name)
    return targets.make(name, prior_scale=prior)


def _points(target: Target, n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Random points in a plausible region: log-scales near log 0.1 for brownian."""
    x = 0.3 * torch.randn(n, target.dim, generator=torch.Generator().manual_seed(seed))
    if target.name == "brownian":
        x[:, :2] += np.log(0.1)
    return x.to(dtype)


# ---------- independent re-implementations on the raw files ----------


def _benchmark_likelihood(features: np.ndarray, labels: np.ndarray, w: np.ndarray) -> np.ndarray:
    """sum_i log sigmoid(+-x_i.w), + where the label is 0, on std-scaled features with intercept."""
    scaled = features / features.std(axis=0)
    eta = w[:, 1:] @ scaled.T + w[:, :1]
    return np.where(labels == 0, log_expit(eta), log_expit(-eta)).sum(1)


def _bernoulli_logit_posterior(archive: str, w: np.ndarray) -> np.ndarray:
    data = np.load(DATA / archive)
    X, y = data["X"], data["y"]
    std = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)
    eta = w[:, 1:] @ Z.T + w[:, :1]
    return stats.bernoulli.logpmf(y, expit(eta)).sum(1) + stats.norm.logpdf(w).sum(1)


def _expected_log_prob(name: str, prior: float | None, w: np.ndarray) -> np.ndarray:
    if name == "credit":
        raw = np.loadtxt(DATA / "german.data-numeric")
        lp = _benchmark_likelihood(raw[:, :-1], raw[:, -1] - 1, w)
        return lp + (stats.norm(0, prior).logpdf(w).sum(1) if prior else 0)
    if name == "cancer":
        return _benchmark_likelihood(*load_breast_cancer(return_X_y=True), w)
    if name in ("sonar", "ionosphere"):
        return _bernoulli_logit_posterior(f"{name}.npz", w)
    if name == "seeds":
        plates = np.genfromtxt(DATA / "seeds.csv", delimiter=",", names=True)
        r, n, x1, x2 = (plates[k] for k in ("r", "n", "x1", "x2"))
        tau, a0, a1, a2, a12, b = np.exp(w[:, 0]), w[:, 1], w[:, 2], w[:, 3], w[:, 4], w[:, 5:]
        eta = a0[:, None] + a1[:, None] * x1 + a2[:, None] * x2 + a12[:, None] * x1 * x2 + b
        return (
            stats.gamma(a=0.01, scale=1 / 0.01).logpdf(tau)
            + w[:, 0]  # log-Jacobian of tau = exp(log tau)
            + stats.norm(0, 10).logpdf(w[:, 1:5]).sum(1)
            + stats.norm.logpdf(b, scale=1 / np.sqrt(tau)[:, None]).sum(1)
            + stats.binom.logpmf(r, n, expit(eta)).sum(1)
        )
    if name == "brownian":
        observed = np.load(DATA / "brownian.npz")["observed_loc"].astype(np.float64)
        seen = ~np.isnan(observed)
        innovation, observation, locs = np.exp(w[:, 0]), np.exp(w[:, 1]), w[:, 2:]
        previous = np.hstack([np.zeros((len(w), 1)), locs[:, :-1]])
        return (
            stats.lognorm(s=2).logpdf(innovation)
            + w[:, 0]
            + stats.lognorm(s=2).logpdf(observation)
            + w[:, 1]
            + stats.norm.logpdf(locs, previous, innovation[:, None]).sum(1)
            + stats.norm.logpdf(observed[seen], locs[:, seen], observation[:, None]).sum(1)
        )
    raise AssertionError(name)


# ---------- every target ----------


@pytest.mark.parametrize(("name", "prior"), CASES, ids=IDS)
def test_log_prob_matches_independent_computation(name, prior):
    target = _target(name, prior)
    assert target.dim == DIMS[name] and target.name == name
    x = _points(target, 6, seed=1)
    expected = _expected_log_prob(name, prior, x.numpy())
    np.testing.assert_allclose(target.log_prob(x).numpy(), expected, rtol=1e-9)


@pytest.mark.parametrize(("name", "prior"), CASES, ids=IDS)
def test_dtype_shapes_and_batching(name, prior):
    target = _target(name, prior)
    x64 = _points(target, 5, seed=2)
    lp64 = target.log_prob(x64)
    assert lp64.shape == (5,) and lp64.dtype == torch.float64
    lp32 = target.log_prob(x64.float())
    assert lp32.shape == (5,) and lp32.dtype == torch.float32
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-4, atol=1e-3)
    rows = torch.cat([target.log_prob(x64[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(rows, lp64, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("name", "prior"), CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_analytic_score_equals_autograd(name, prior, dtype):
    target = _target(name, prior)
    x = _points(target, 4, seed=3, dtype=dtype)
    lp, score = target.log_prob_and_score(x)
    auto_lp, auto_score = Target.log_prob_and_score(target, x)
    assert score.dtype == dtype and score.shape == x.shape and torch.isfinite(score).all()
    tol = {"rtol": 1e-10, "atol": 1e-8} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-2}
    torch.testing.assert_close(lp, auto_lp, **tol)
    torch.testing.assert_close(score, auto_score, **tol)


@pytest.mark.parametrize(("name", "prior"), CASES, ids=IDS)
def test_autograd_gradient_passes_gradcheck(name, prior):
    target = _target(name, prior)
    x = _points(target, 2, seed=4).requires_grad_(True)
    assert torch.autograd.gradcheck(target.log_prob, (x,), eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("name", "prior"), CASES, ids=IDS)
def test_runs_on_cuda(name, prior):
    target = _target(name, prior)
    x = _points(target, 3, seed=5)
    lp, score = target.log_prob_and_score(x.cuda())
    torch.testing.assert_close(lp.cpu(), target.log_prob(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(score.cpu(), target.score(x), rtol=1e-9, atol=1e-9)


def test_registry_lists_the_bayesian_targets_and_which_have_samples():
    for name, dim in DIMS.items():
        facts = targets.info(name)
        assert facts.dim == str(dim)
        assert facts.samples == (name == "credit")
    with pytest.raises(targets.TargetError, match="prior_scale must be > 0"):
        targets.make("credit", prior_scale=-1.0)


# ---------- credit: reference samples ----------


def _map(target: Target) -> np.ndarray:
    """Maximiser of log_prob by L-BFGS in float64, started at 0."""
    x = torch.zeros(1, target.dim, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [x],
        max_iter=500,
        tolerance_grad=1e-9,
        tolerance_change=1e-14,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -target.log_prob(x).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert target.score(x.detach()).abs().max() < 1e-4
    return x.detach()[0].numpy()


def test_credit_map_is_near_the_reference_mean_and_the_prior_moves_it_little():
    reference = np.load(DATA / "credit_reference_samples.npz")["samples"]
    likelihood_map = _map(_target("credit", None))
    assert np.abs(likelihood_map - reference.mean(0)).max() < 0.15
    prior_map = _map(_target("credit", 10.0))
    # data/README.md: the N(0, 10^2) prior moves the MAP by at most 0.05 in any coordinate.
    assert 0 < np.abs(prior_map - likelihood_map).max() < 0.05


def test_credit_samples_are_reference_rows():
    credit = _target("credit", None)
    reference = np.load(DATA / "credit_reference_samples.npz")["samples"]
    row_index = {tuple(row): i for i, row in enumerate(reference.tolist())}  # rows are distinct
    few = credit.sample(500, torch.Generator().manual_seed(0))
    assert few.shape == (500, 25) and few.dtype == torch.float64
    drawn = [row_index[tuple(row)] for row in few.tolist()]  # KeyError: not a reference row
    assert len(set(drawn)) == 500  # no repeats while n <= 10,000
    torch.testing.assert_close(credit.sample(500, torch.Generator().manual_seed(0)), few)

    many = credit.sample(12_000, torch.Generator().manual_seed(1))
    assert many.shape == (12_000, 25)
    assert all(tuple(row) in row_index for row in many.tolist())
    assert len(torch.unique(many, dim=0)) < 10_000  # with replacement: some rows repeat
    np.testing.assert_allclose(many.mean(0).numpy(), reference.mean(0), atol=0.02)


def test_targets_without_reference_samples_say_so():
    with pytest.raises(NotImplementedError, match="cancer"):
        _target("cancer", None).sample(3)


# ---------- seeds and brownian: embedded data, posterior sanity ----------


def test_embedded_tables_equal_the_shared_files():
    plates = np.genfromtxt(DATA / "seeds.csv", delimiter=",", skip_header=1)
    np.testing.assert_array_equal(PLATES, plates)
    observed = np.load(DATA / "brownian.npz")["observed_loc"]
    np.testing.assert_array_equal(OBSERVED_LOC, observed)  # NaNs in the same places


def test_brownian_conditional_mean_at_the_reference_scales_is_near_the_posterior_mean():
    """At the posterior-mean scales, the locs maximising log_prob (the conditional mean of this
    linear-Gaussian model) lie within 0.3 posterior standard deviations of inference-gym's
    posterior means, including the interpolated missing middle."""
    brownian = _target("brownian", None)
    gt = np.load(DATA / "brownian.npz")
    log_scales = torch.tensor(
        [
            np.log(gt["gt_identity_innovation_noise_scale_mean"]),
            np.log(gt["gt_identity_observation_noise_scale_mean"]),
        ]
    )[None]
    locs = torch.zeros(1, 30, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [locs], max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = -brownian.log_prob(torch.cat([log_scales, locs], dim=1)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    z = (locs.detach()[0].numpy() - gt["gt_identity_locs_mean"]) / gt[
        "gt_identity_locs_standard_deviation"
    ]
    assert np.abs(z).max() < 0.3
