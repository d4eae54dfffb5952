"""Metrics against hand-computed values, exact OT (assignment), POT, and exact target samples."""

import math

import numpy as np
import ot
import pytest
import torch
from scipy.optimize import linear_sum_assignment

import targets
from targets.base import Target
from trainers.metrics import (
    CATALOGUE,
    METRIC_NAMES,
    N_NONFINITE,
    elbo,
    emc,
    ess,
    evaluate_samples,
    log_z_estimate,
    metric_label,
    metrics_for,
    sinkhorn,
)


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_elbo_and_log_z_of_known_weights():
    log_w = torch.log(_t([1.0, 2.0, 3.0, 4.0]))
    assert elbo(log_w) == pytest.approx(math.log(24) / 4)
    assert log_z_estimate(log_w) == pytest.approx(math.log(10 / 4))
    # a large common offset is carried exactly (no overflow)
    assert log_z_estimate(log_w + 5000) == pytest.approx(5000 + math.log(10 / 4))


def test_ess_known_cases():
    assert ess(torch.zeros(100, dtype=torch.float64)) == pytest.approx(1.0)
    dominated = torch.full((50,), -1000.0, dtype=torch.float64)
    dominated[7] = 0.0
    assert ess(dominated) == pytest.approx(1 / 50)
    # (1 + 2 + 3 + 4)^2 / (4 * (1 + 4 + 9 + 16))
    assert ess(torch.log(_t([1.0, 2.0, 3.0, 4.0])) - 800) == pytest.approx(100 / 120)


def test_emc_known_cases():
    assert emc(torch.arange(40).repeat(5), 40) == pytest.approx(1.0)
    assert emc(torch.full((100,), 3), 40) == 0.0
    # p = (1/2, 1/4, 1/4, 0): H = 1.5 log 2 = 0.75 log 4
    assert emc(torch.tensor([0, 0, 1, 2]), 4) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="2 modes"):
        emc(torch.zeros(3, dtype=torch.long), 1)


def _clouds(seed: int, n: int, m: int, d: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = 1.5 * torch.rand(m, d, generator=gen, dtype=torch.float64) + 0.5
    return x, y


def test_sinkhorn_of_a_set_with_itself_is_zero():
    x, _ = _clouds(0, 200, 1)
    assert abs(sinkhorn(x, x)) < 1e-3 * float(x.var(0).sum())


@pytest.mark.parametrize("relative", [True, False])
def test_sinkhorn_of_a_translated_copy_is_the_squared_shift(relative):
    """For any epsilon, OT_eps(x, x + t) = OT_eps(x, x) + |t|^2 (the cross term integrates to
    zero under the marginal constraints), so S = |t|^2 up to the solver's marginal tolerance."""
    x, _ = _clouds(1, 200, 1)
    shift = _t([3.0, -4.0])
    assert sinkhorn(x, x + shift, 0.05 if relative else 0.1, relative=relative) == pytest.approx(
        25.0, rel=1e-3
    )


def test_sinkhorn_matches_pot_debiased_divergence():
    """POT's plan-based debiased divergence (plain log-domain Sinkhorn, run to 1e-9)."""
    x, y = _clouds(2, 120, 90, d=3)
    mean_cost = float(torch.cdist(x, y).square().mean())
    for eps, relative, pot_reg in [(0.3, False, 0.3), (0.05, True, 0.05 * mean_cost)]:
        reference = ot.solve_sample(x, y, reg=pot_reg, debias=True, max_iter=20000, tol=1e-9)
        got = sinkhorn(x, y, eps, relative=relative, tol=1e-6)
        assert got == pytest.approx(float(reference.value), rel=1e-5)


def test_sinkhorn_approaches_exact_w2_for_small_epsilon():
    """Equal-size uniform clouds: exact W2^2 is an assignment problem (scipy)."""
    x, y = _clouds(3, 64, 64)
    cost = torch.cdist(x, y).square().numpy()
    rows, cols = linear_sum_assignment(cost)
    w2 = cost[rows, cols].mean()
    coarse = sinkhorn(x, y, 0.1, relative=False)
    fine = sinkhorn(x, y, 0.003, relative=False, max_iter=5000)
    assert abs(fine - w2) < 1e-3 * w2 < abs(coarse - w2)


def test_sinkhorn_dtype_and_subsampling():
    x, y = _clouds(4, 300, 250)
    full = sinkhorn(x, y)
    assert sinkhorn(x.float(), y) == pytest.approx(full, rel=1e-4)
    assert sinkhorn(x, y, max_points=300) == full
    gen = torch.Generator().manual_seed(0)
    sub = sinkhorn(x, y, max_points=120, generator=gen)
    assert sub == pytest.approx(full, rel=0.5)


def test_evaluate_samples_on_exact_gmm40_samples():
    """q = the target itself (log Z = 0): every weight is 1, so ELBO = log Z = 0 and ESS = 1."""
    gmm = targets.make("gmm40", dim=2)
    gen = torch.Generator().manual_seed(0)
    x = gmm.sample(2000, gen)
    log_w = gmm.log_prob(x) - gmm.log_prob(x)
    result = evaluate_samples(log_w, x, gmm, generator=gen, sinkhorn_points=500)
    assert result["elbo"] == 0.0 and result["log_z"] == pytest.approx(0.0, abs=1e-12)
    assert result["delta_log_z"] == pytest.approx(0.0, abs=1e-12)
    assert result["ess"] == pytest.approx(1.0)
    assert result["n_nonfinite"] == 0
    # multinomial 2000 draws over 40 equal modes: E[entropy deficit] ~ 39 / (2 * 2000)
    assert 0.99 < result["emc"] <= 1.0
    # two independent 500-subsamples: small next to a sampler whose modes are shifted by (3, 4)
    shifted = evaluate_samples(log_w, x + _t([3.0, 4.0]), gmm, generator=gen, sinkhorn_points=500)
    assert result["sinkhorn"] < 0.5 * shifted["sinkhorn"]


def test_evaluate_samples_importance_weights_from_a_broad_proposal():
    """q = N(0, 30^2 I) covers GMM40 (d=2): the log Z estimate is unbiased, ELBO < log Z."""
    gmm = targets.make("gmm40", dim=2)
    gen = torch.Generator().manual_seed(1)
    x = 30 * torch.randn(20000, 2, generator=gen, dtype=torch.float64)
    log_q = -0.5 * (x / 30).square().sum(-1) - 2 * math.log(30) - math.log(2 * math.pi)
    result = evaluate_samples(gmm.log_prob(x) - log_q, x, gmm, generator=gen, sinkhorn_points=200)
    assert "sinkhorn" in result
    assert result["delta_log_z"] < 0.1
    assert result["elbo"] < -0.5
    assert 0.0 < result["ess"] < 0.9


def test_evaluate_samples_survives_nonfinite_values():
    gmm = targets.make("gmm40", dim=2)
    gen = torch.Generator().manual_seed(2)
    x = gmm.sample(300, gen)
    log_w = torch.zeros(300, dtype=torch.float64)
    log_w[:3] = _t([math.nan, math.inf, -math.inf])
    x[5] = math.nan
    result = evaluate_samples(log_w, x, gmm, generator=gen)
    assert result["n_nonfinite"] == 3
    assert result["elbo"] == 0.0 and result["ess"] == pytest.approx(1.0)
    assert all(math.isfinite(v) for v in result.values())
    all_bad = evaluate_samples(torch.full((300,), math.nan), x, gmm, generator=gen)
    assert all_bad["n_nonfinite"] == 300 and math.isnan(all_bad["elbo"])


class _Bare(Target):
    """A target that knows nothing beyond its density."""

    name = "bare"
    dim = 2

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return -0.5 * x.square().sum(-1)


def test_evaluate_samples_reports_only_what_the_target_supports():
    x = torch.randn(100, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    assert set(evaluate_samples(torch.zeros(100), x, _Bare())) == {
        "elbo",
        "log_z",
        "ess",
        "n_nonfinite",
    }
    funnel = targets.make("funnel", dim=2)
    assert set(evaluate_samples(torch.zeros(100), x, funnel)) == {
        "elbo",
        "log_z",
        "ess",
        "n_nonfinite",
        "delta_log_z",
        "sinkhorn",
    }
    np.testing.assert_equal(evaluate_samples(torch.zeros(100), x, funnel)["delta_log_z"], 0.0)


@pytest.mark.parametrize("name", ["funnel", "gmm40", "credit"])
def test_evaluation_gives_exactly_the_catalogue_metrics_its_target_supports(name):
    """One rule for which metric needs what: evaluate_samples, the spec's objective check and
    the CLI all read it from the catalogue (metrics_for), so they cannot disagree."""
    target = targets.make(name, **({"dim": 2} if name == "gmm40" else {}))
    facts = targets.info(name)
    x = torch.randn(64, target.dim, generator=torch.Generator().manual_seed(0))
    got = evaluate_samples(torch.randn(64), x, target, sinkhorn_points=64)
    wanted = metrics_for(log_Z=facts.log_Z, samples=facts.samples, modes=facts.modes)
    assert set(got) - {N_NONFINITE} == set(wanted)
    assert set(wanted) <= set(METRIC_NAMES)


def test_metric_labels_carry_the_catalogue_direction():
    assert metric_label("elbo", arrow=True) == "ELBO ↑"
    assert metric_label("delta_log_z") == "ΔlogZ"
    assert metric_label("not_a_metric", arrow=True) == "not_a_metric"
    assert all(m.requires in (None, "log_Z", "samples", "modes") for m in CATALOGUE.values())
