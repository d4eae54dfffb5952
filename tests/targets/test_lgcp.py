"""LGCP on the Finnish pines: counts, kernel and log density against an independent scipy model."""

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import stats

import targets
from targets.data import data_path
from targets.lgcp import PINES, read_pines

SIGMA2, BETA = 1.91, 1 / 33


def _histogram_counts(grid_dim: int) -> np.ndarray:
    """Counts per cell by numpy's 2-d histogram (x cell major; the upper edge in the last cell)."""
    pts = read_pines()
    edges = np.linspace(0, 1, grid_dim + 1)
    counts, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=[edges, edges])
    return counts.reshape(-1)


def _scipy_log_density(z: np.ndarray, grid_dim: int) -> np.ndarray:
    """log rho(z) via the unwhitened model: N(f; mu, K) Poisson(counts; exp(f) / n^2) |det L|."""
    n = grid_dim
    cells = [(i, j) for i in range(n) for j in range(n)]
    K = np.array(
        [
            [SIGMA2 * math.exp(-math.hypot(i - k, j - m) / (n * BETA)) for k, m in cells]
            for i, j in cells
        ]
    )
    L = np.linalg.cholesky(K)
    mu = math.log(126) - SIGMA2 / 2
    counts = _histogram_counts(n)
    f = z @ L.T + mu
    prior_f = stats.multivariate_normal(mean=np.full(n * n, mu), cov=K).logpdf(f)
    likelihood = (counts * f - np.exp(f) / n**2).sum(-1)
    return prior_f + np.log(np.diag(L)).sum() + likelihood


def test_pinned_checksum_matches_the_shared_file():
    digest = hashlib.sha256(data_path("pines.csv").read_bytes()).hexdigest()
    assert digest == PINES.sha256


def test_counts_full_grid_match_histogram():
    lgcp = targets.make("lgcp")
    assert lgcp.dim == 1600
    counts = lgcp.buffer("counts", torch.empty(0, dtype=torch.float64))
    assert counts.sum().item() == 126
    np.testing.assert_array_equal(counts.numpy(), _histogram_counts(40))
    assert lgcp.mu == pytest.approx(math.log(126) - 0.955)


@pytest.mark.parametrize("grid_dim", [4, 7])
def test_log_prob_matches_scipy_change_of_variables(grid_dim):
    lgcp = targets.make("lgcp", grid_dim=grid_dim)
    z = 0.7 * torch.randn(
        6, grid_dim**2, generator=torch.Generator().manual_seed(3), dtype=torch.float64
    )
    expected = _scipy_log_density(z.numpy(), grid_dim)
    np.testing.assert_allclose(lgcp.log_prob(z).numpy(), expected, rtol=1e-10)


def test_analytic_score_equals_autograd():
    lgcp = targets.make("lgcp", grid_dim=8)
    z = torch.randn(5, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lp, score = lgcp.log_prob_and_score(z)
    z_leaf = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(lgcp.log_prob(z_leaf).sum(), z_leaf)
    torch.testing.assert_close(lp, lgcp.log_prob(z), rtol=1e-12, atol=0)
    torch.testing.assert_close(score, grad, rtol=1e-10, atol=1e-10)


def test_gradcheck_float64():
    lgcp = targets.make("lgcp", grid_dim=4)
    z = 0.5 * torch.randn(3, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert torch.autograd.gradcheck(lgcp.log_prob, (z.requires_grad_(True),))


def test_batching_and_dtypes():
    lgcp = targets.make("lgcp", grid_dim=6)
    z64 = torch.randn(9, 36, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    lp64, score64 = lgcp.log_prob_and_score(z64)
    lp32, score32 = lgcp.log_prob_and_score(z64.float())
    assert lp64.shape == (9,) and lp32.dtype == torch.float32 and score32.dtype == torch.float32
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(score32.double(), score64, rtol=1e-4, atol=1e-3)
    one_by_one = torch.cat([lgcp.log_prob(row[None]) for row in z64])
    torch.testing.assert_close(one_by_one, lp64, rtol=1e-12, atol=0)


def test_bad_arguments_are_errors():
    with pytest.raises(targets.TargetError, match="grid_dim"):
        targets.make("lgcp", grid_dim=0)
    with pytest.raises(targets.TargetError, match="sigma2"):
        targets.make("lgcp", grid_dim=4, sigma2=-1.0)
