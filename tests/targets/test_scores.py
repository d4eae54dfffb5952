"""Closed-form scores of funnel, GMM40, MoS and logistic regression: equal to autograd of
log_prob (float64, points far into the funnel's neck and mouth and far from every mixture mode),
to central differences (gradcheck), and `score` equal to the fused `log_prob_and_score`."""

import pytest
import torch

import targets
from targets.base import Target

CASES = {
    "funnel": ("funnel", {"dim": 10}),
    "funnel-d3": ("funnel", {"dim": 3, "scale": 1.5}),
    "gmm40-d2": ("gmm40", {"dim": 2}),
    "gmm40-d5": ("gmm40", {"dim": 5, "seed": 3}),
    "mos": ("mos", {"dim": 50}),
    "mos-df5": ("mos", {"dim": 4, "n_modes": 3, "df": 5.0, "seed": 1}),
    "credit": ("credit", {}),
}


def _make(case: str) -> Target:
    name, kwargs = CASES[case]
    return targets.make(name, **kwargs)


def _points(target: Target, seed: int) -> torch.Tensor:
    """Float64 points in and far outside the bulk: for the funnel x1 from -30 to 30."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(12, target.dim, generator=gen, dtype=torch.float64)
    if target.name == "funnel":
        x[:, 0] = torch.tensor([-30.0, -12.0, -5.0, -1.0, 0.0, 0.5, 2.0, 5.0, 9.0, 12.0, 20.0, 30])
        x[:, 1:] *= torch.exp(0.5 * x[:, :1]).clamp(1e-3, 1e3)
    elif target.name in ("gmm40", "mos"):
        x *= torch.tensor([1.0, 5.0, 20.0, 60.0, 300.0, 1.0] * 2, dtype=torch.float64)[:, None]
    else:  # logistic regression: the posterior bulk lies within ~1 of 0
        x *= 0.5
    return x


@pytest.mark.parametrize("case", CASES)
def test_analytic_score_equals_autograd_in_float64(case: str) -> None:
    target = _make(case)
    x = _points(target, seed=0)
    log_prob, score = target.log_prob_and_score(x)
    auto_log_prob, auto_score = Target.log_prob_and_score(target, x)  # autograd of log_prob
    assert score.dtype == torch.float64 and score.shape == x.shape
    assert torch.isfinite(score).all() and torch.isfinite(log_prob).all()
    torch.testing.assert_close(log_prob, auto_log_prob, rtol=1e-12, atol=1e-10)
    torch.testing.assert_close(score, auto_score, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(target.score(x), score, rtol=0, atol=0)


def test_funnel_score_at_known_points() -> None:
    """At x = 0: d/dx1 = -(d - 1) / 2, the rest 0; at x1 = 0, x2 = 1: d/dx1 = 1/2 - (d - 1) / 2."""
    funnel = targets.make("funnel", dim=4)
    x = torch.zeros(2, 4, dtype=torch.float64)
    x[1, 1] = 1.0
    expected = torch.tensor([[-1.5, 0, 0, 0], [-1.0, -1.0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(funnel.score(x), expected, rtol=0, atol=1e-15)


def test_gmm_score_points_to_the_nearest_mode_far_away() -> None:
    """Far from all modes the score is (nearest mean - x): the responsibilities are one-hot."""
    gmm = targets.make("gmm40", dim=2)
    x = torch.tensor([[500.0, -700.0]], dtype=torch.float64)
    means = gmm._buffers["means"]
    nearest = means[(means - x).square().sum(-1).argmin()]
    torch.testing.assert_close(gmm.score(x)[0], nearest - x[0], rtol=1e-12, atol=1e-9)


class _AnalyticLogProb(torch.autograd.Function):
    """log rho(x) whose backward pass is the target's closed-form score (for gradcheck)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: Target) -> torch.Tensor:
        log_prob, score = target.log_prob_and_score(x)
        ctx.save_for_backward(score)
        return log_prob

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (score,) = ctx.saved_tensors
        return grad.unsqueeze(-1) * score, None


@pytest.mark.parametrize("case", CASES)
def test_analytic_score_passes_gradcheck(case: str) -> None:
    """The closed-form score against central finite differences of log_prob."""
    target = _make(case)
    x = (0.7 * _points(target, seed=1)[4:7]).requires_grad_(True)  # moderate points
    assert torch.autograd.gradcheck(
        lambda y: _AnalyticLogProb.apply(y, target), (x,), eps=1e-6, atol=1e-5, rtol=1e-4
    )


@pytest.mark.parametrize("case", ["funnel", "gmm40-d2", "mos", "credit"])
def test_float32_score_matches_float64(case: str) -> None:
    target = _make(case)
    x = 0.5 * _points(target, seed=2)[3:8]
    log_prob, score = target.log_prob_and_score(x.float())
    assert score.dtype == torch.float32 and log_prob.dtype == torch.float32
    reference_lp, reference = target.log_prob_and_score(x)
    torch.testing.assert_close(score.double(), reference, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(log_prob.double(), reference_lp, rtol=1e-5, atol=1e-3)
