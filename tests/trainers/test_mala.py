"""Batched MALA: the MH ratio against scipy, invariance of Gaussians, step-size adaptation."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from trainers.mala import ascend, langevin_burn_in, log_accept_ratio, run_mala


def _gaussian(mean: np.ndarray, cov: np.ndarray):
    """log_prob_and_score of N(mean, cov) (unnormalised) and an exact sampler."""
    m = torch.as_tensor(mean, dtype=torch.float64)
    cov_t = torch.as_tensor(cov, dtype=torch.float64)
    precision = torch.linalg.inv(cov_t)
    chol = torch.linalg.cholesky(cov_t)

    def log_prob_and_score(x):
        z = x - m.to(x.dtype)
        pz = z @ precision.to(x.dtype)
        return -0.5 * (z * pz).sum(-1), -pz

    def sample(n, generator):
        return m + torch.randn(n, len(mean), generator=generator, dtype=torch.float64) @ chol.T

    return log_prob_and_score, sample


CORRELATED_2D = (np.array([1.0, -1.0]), np.array([[1.0, 0.9], [0.9, 1.0]]))
ANISOTROPIC_5D = (np.array([1.0, -2.0, 0.0, 3.0, 0.5]), np.diag([0.05, 0.2, 1.0, 4.0, 16.0]))


def test_log_accept_ratio_matches_scipy_densities():
    rng = np.random.default_rng(0)
    n, d = 6, 3
    x, y, gx, gy = (rng.normal(size=(n, d)) for _ in range(4))
    lpx, lpy = rng.normal(size=n), rng.normal(size=n)
    h = rng.uniform(0.05, 0.5, size=n)
    expected = [
        lpy[i]
        - lpx[i]
        + stats.multivariate_normal.logpdf(x[i], y[i] + h[i] * gy[i], 2 * h[i] * np.eye(d))
        - stats.multivariate_normal.logpdf(y[i], x[i] + h[i] * gx[i], 2 * h[i] * np.eye(d))
        for i in range(n)
    ]
    t = torch.from_numpy
    got = log_accept_ratio(t(x), t(y), t(lpx), t(lpy), t(gx), t(gy), t(h))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_log_accept_ratio_rejects_nan():
    one = torch.ones(1, 2, dtype=torch.float64)
    lp = torch.tensor([-math.inf])
    ratio = log_accept_ratio(one, one, lp, lp, one, one, torch.tensor([0.1]))
    assert ratio.item() == -math.inf


@pytest.mark.parametrize(
    ("mean", "cov", "step"), [(*CORRELATED_2D, 0.05), (*ANISOTROPIC_5D, 0.025)]
)
def test_mala_leaves_gaussian_invariant(mean, cov, step):
    """From exact samples, the chains' final states are still exact samples.

    The step is half the smallest variance: unadjusted Langevin would inflate that direction's
    variance by 1 / (1 - h / (2 var)) = 4/3, 15 standard errors away; MALA must not.
    """
    fn, sample = _gaussian(mean, cov)
    n = 4000
    gen = torch.Generator().manual_seed(0)
    result = run_mala(fn, sample(n, gen), n_steps=30, step_size=step, generator=gen)
    assert 0.3 < result.acceptance < 0.95  # the MH correction is active
    x = result.x.numpy()
    # mean: standard error sqrt(var / n); covariance entries: sqrt((s_ii s_jj + s_ij^2) / n)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) < 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    assert np.all(np.abs(np.cov(x.T) - cov) < 5 * se_cov)
    # the narrowest direction, where a missing correction would show most
    lam, vecs = np.linalg.eigh(cov)
    v = vecs[:, 0]
    var_v = np.var(x @ v, ddof=1)
    se_v = math.sqrt(2 / n) * lam[0]
    assert abs(var_v - lam[0]) < 5 * se_v
    assert abs(lam[0] / (1 - step / (2 * lam[0])) - lam[0]) > 10 * se_v  # the test has power


def test_mala_respects_a_bounded_support():
    """Half-normal: proposals with log density -inf are rejected, the law stays exact."""

    def fn(x):
        lp = torch.where(x[:, 0] > 0, -0.5 * x[:, 0] ** 2, -math.inf)
        return lp, -x

    gen = torch.Generator().manual_seed(1)
    n = 4000
    x0 = torch.randn(n, 1, generator=gen, dtype=torch.float64).abs()
    result = run_mala(fn, x0, n_steps=20, step_size=0.5, generator=gen)
    x = result.x[:, 0].numpy()
    assert (x > 0).all()
    half_normal = stats.halfnorm()
    assert abs(x.mean() - half_normal.mean()) < 5 * half_normal.std() / math.sqrt(n)
    assert stats.kstest(x, half_normal.cdf).pvalue > 1e-3


@pytest.mark.parametrize("per_chain", [False, True])
@pytest.mark.parametrize("target_accept", [0.3, 0.574, 0.8])
def test_step_size_adapts_to_target_acceptance(per_chain, target_accept):
    """From a step 1e3 times too small and 1e3 times too big, both reach the target."""
    fn, sample = _gaussian(*ANISOTROPIC_5D)
    adapted = []
    for initial in (1e-4, 1e2):
        gen = torch.Generator().manual_seed(2)
        result = run_mala(
            fn,
            sample(512, gen),
            n_steps=400,
            n_adapt=200,
            step_size=initial,
            target_accept=target_accept,
            per_chain=per_chain,
            generator=gen,
        )
        assert result.acceptance == pytest.approx(target_accept, abs=0.04)
        adapted.append(result.step_size.median().item())
        assert result.step_size.shape == (512,)
        if not per_chain:
            assert torch.all(result.step_size == result.step_size[0])
    assert adapted[0] == pytest.approx(adapted[1], rel=0.15)


def test_mala_is_deterministic_and_keeps_dtype():
    fn, sample = _gaussian(*CORRELATED_2D)
    x0 = sample(64, torch.Generator().manual_seed(3)).float()

    def run(seed):
        gen = torch.Generator().manual_seed(seed)
        return run_mala(fn, x0, n_steps=20, n_adapt=10, step_size=0.1, generator=gen)

    a, b, c = run(0), run(0), run(1)
    assert a.x.dtype == torch.float32 and a.step_size.dtype == torch.float32
    assert torch.equal(a.x, b.x) and a.acceptance == b.acceptance
    assert not torch.equal(a.x, c.x)


@pytest.mark.parametrize(("n_adapt", "n_steps"), [(-1, 10), (10, 10)])
def test_mala_rejects_bad_adaptation_length(n_adapt, n_steps):
    fn, _ = _gaussian(*CORRELATED_2D)
    with pytest.raises(ValueError, match="n_adapt"):
        run_mala(fn, torch.zeros(2, 2), n_steps=n_steps, n_adapt=n_adapt, step_size=0.1)


def test_burn_in_brings_chains_from_far_away_to_the_mode_without_diverging():
    """From 1,000 units away in d = 50 (gradients of that size), capped-drift Langevin steps
    travel at most `max_move` per step and then contract: every chain ends in the mode's bulk."""
    log_prob_and_score, _ = _gaussian(np.full(50, 3.0), np.eye(50))
    x0 = torch.full((32, 50), 3.0, dtype=torch.float64)
    x0[:, 0] += 1000.0
    gen = torch.Generator().manual_seed(0)
    x = langevin_burn_in(
        log_prob_and_score, x0, n_steps=300, step_size=0.5, max_move=5.0, generator=gen
    )
    assert torch.isfinite(x).all()
    distance = torch.linalg.vector_norm(x - 3.0, dim=-1)
    assert distance.max() < 3 * math.sqrt(50)  # the bulk of N(3, I) has radius ~ sqrt(50)
    short = langevin_burn_in(log_prob_and_score, x0, n_steps=100, step_size=0.5, max_move=5.0)
    assert (short[:, 0] - 3.0).min() > 1000.0 - 100 * 5.0 - 50  # at most max_move per step


def test_ascent_finds_the_mode_of_a_heavy_tailed_density_from_its_far_tail():
    """Student-t (df 2) in 20 dimensions, coordinates up to 200 out: gradients there are ~1e-2,
    at the mode ~1; Rprop's sign-based steps reach the mode in every coordinate."""
    center = torch.linspace(-5.0, 5.0, 20, dtype=torch.float64)

    def log_prob_and_score(x):
        z = x - center
        return (-1.5 * torch.log1p(z**2 / 2)).sum(-1), -3 * z / (2 + z**2)

    gen = torch.Generator().manual_seed(0)
    x0 = center + 200 * (2 * torch.rand(16, 20, generator=gen, dtype=torch.float64) - 1)
    x = ascend(log_prob_and_score, x0, n_steps=200, step_size=0.1)
    torch.testing.assert_close(x, center.expand_as(x), atol=1e-4, rtol=0)
