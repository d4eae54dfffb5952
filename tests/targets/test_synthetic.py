"""Funnel, GMM40 and MoS: normalisers by numerical integration, exact samples vs closed forms."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

import targets


def _grid_integral(target: targets.Target, half_width: float, step: float = 0.5) -> float:
    """Riemann sum of exp(log_prob) over [-half_width, half_width]^2, in chunks.

    For a smooth density that decays within the box the sum converges exponentially in
    1/step (the trapezoidal rule's behaviour for analytic integrands), so step 0.5 on unit-scale
    components agrees with step 0.25 to 1e-8 (measured for gmm40 and MoS) at 1/25 of step 0.1's
    cost; what is left is the mass outside the box.
    """
    axis = torch.arange(-half_width, half_width + step / 2, step, dtype=torch.float64)
    total = 0.0
    for chunk in axis.split(200):
        xx, yy = torch.meshgrid(chunk, axis, indexing="ij")
        pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
        total += torch.exp(target.log_prob(pts)).sum().item()
    return total * step**2


def test_funnel_two_dim_normaliser_by_quadrature():
    funnel = targets.make("funnel", dim=2)

    def density(x2: float, x1: float) -> float:
        pt = torch.tensor([[x1, x2]], dtype=torch.float64)
        return math.exp(funnel.log_prob(pt).item())

    # x2 | x1 has standard deviation exp(x1 / 2): integrate it over +-12 of those.
    value, _ = integrate.dblquad(
        density, -30, 30, lambda x1: -12 * math.exp(x1 / 2), lambda x1: 12 * math.exp(x1 / 2)
    )
    assert value == pytest.approx(1.0, rel=0.01)
    assert funnel.log_Z == 0.0


def test_funnel_log_prob_matches_scipy():
    funnel = targets.make("funnel", dim=5)
    x = torch.randn(7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    xn = x.numpy()
    expected = stats.norm(0, 3).logpdf(xn[:, 0]) + stats.norm.logpdf(
        xn[:, 1:], scale=np.exp(xn[:, :1] / 2)
    ).sum(1)
    np.testing.assert_allclose(funnel.log_prob(x).numpy(), expected, rtol=1e-12)


def test_funnel_exact_samples_moments():
    funnel = targets.make("funnel", dim=10)
    x = funnel.sample(200_000, torch.Generator().manual_seed(0))
    assert x.shape == (200_000, 10) and x.dtype == torch.float64
    v = x[:, 0]
    assert v.mean().item() == pytest.approx(0.0, abs=0.03)
    assert v.var().item() == pytest.approx(9.0, rel=0.02)
    standardised = x[:, 1:] / torch.exp(v / 2).unsqueeze(1)
    assert standardised.mean().item() == pytest.approx(0.0, abs=0.01)
    assert standardised.var().item() == pytest.approx(1.0, rel=0.01)


def test_gmm40_normaliser_on_grid():
    gmm = targets.make("gmm40", dim=2)
    assert gmm.n_modes == 40 and gmm.log_Z == 0.0
    assert _grid_integral(gmm, 50.0) == pytest.approx(1.0, rel=0.01)


def test_gmm40_means_in_box_and_log_prob_matches_scipy():
    gmm = targets.make("gmm40", dim=3, seed=5)
    means = gmm._buffers["means"].numpy()
    assert means.shape == (40, 3) and np.abs(means).max() <= 40
    x = torch.randn(6, 3, dtype=torch.float64) * 20
    comps = np.stack([stats.multivariate_normal(m, np.eye(3)).logpdf(x.numpy()) for m in means])
    expected = np.logaddexp.reduce(comps, axis=0) - math.log(40)
    np.testing.assert_allclose(gmm.log_prob(x).numpy(), expected, rtol=1e-10)


def test_gmm40_samples_moments_and_modes():
    gmm = targets.make("gmm40", dim=2)
    x = gmm.sample(100_000, torch.Generator().manual_seed(3))
    means = gmm._buffers["means"]
    expected_cov = torch.eye(2, dtype=torch.float64) + torch.cov(means.T, correction=0)
    assert torch.allclose(x.mean(0), means.mean(0), atol=0.3)
    assert torch.allclose(torch.cov(x.T), expected_cov, rtol=0.03, atol=1.0)
    counts = torch.bincount(gmm.mode_of(x), minlength=40).double() / len(x)
    assert counts.min() > 0.02 and counts.max() < 0.03


def test_mos_normaliser_on_grid():
    mos = targets.make("mos", dim=2)
    assert mos.n_modes == 10 and mos.log_Z == 0.0
    assert _grid_integral(mos, 200.0) == pytest.approx(1.0, rel=0.01)


def test_mos_log_prob_matches_scipy_and_samples_have_t_spread():
    mos = targets.make("mos", dim=4, seed=2)
    means = mos._buffers["means"].numpy()
    x = torch.randn(5, 4, dtype=torch.float64) * 8
    comps = np.stack([stats.t(df=2, loc=m).logpdf(x.numpy()).sum(1) for m in means])
    expected = np.logaddexp.reduce(comps, axis=0) - math.log(10)
    np.testing.assert_allclose(mos.log_prob(x).numpy(), expected, rtol=1e-10)

    samples = mos.sample(50_000, torch.Generator().manual_seed(0))
    nearest = mos.mode_of(samples)
    offsets = (samples - torch.from_numpy(means)[nearest]).abs()
    # Median of |T| for Student-t with 2 degrees of freedom is sqrt(2/3).
    assert offsets.median().item() == pytest.approx(math.sqrt(2 / 3), rel=0.05)


@pytest.mark.parametrize(
    ("name", "kwargs"), [("funnel", {"dim": 4}), ("gmm40", {"dim": 3}), ("mos", {"dim": 3})]
)
def test_dtypes_batching_and_gradients(name, kwargs):
    target = targets.make(name, **kwargs)
    x64 = torch.randn(
        6, target.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(4)
    )
    lp64 = target.log_prob(x64)
    lp32 = target.log_prob(x64.float())
    assert lp64.shape == (6,) and lp64.dtype == torch.float64 and lp32.dtype == torch.float32
    torch.testing.assert_close(lp32.double(), lp64, rtol=1e-4, atol=1e-4)
    singles = torch.cat([target.log_prob(x64[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(singles, lp64)
    _, score = target.log_prob_and_score(x64)
    assert torch.isfinite(score).all()
    assert torch.autograd.gradcheck(target.log_prob, (x64[:3].clone().requires_grad_(True),))
