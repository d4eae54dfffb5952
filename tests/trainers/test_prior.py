"""GaussianMixturePrior against scipy, closed-form moments and its gradient contract."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from trainers.prior import GaussianMixturePrior

ACTIVE = [True, False, True, False]  # slots 0 and 2 active, 1 and 3 masked


def random_prior(dtype: torch.dtype = torch.float64, seed: int = 0) -> GaussianMixturePrior:
    """A 4-slot prior in d = 3 with random means and scales and two inactive slots."""
    gen = torch.Generator().manual_seed(seed)
    prior = GaussianMixturePrior(4, 3, k_init=4, init_mean_std=2.0, generator=gen).to(dtype)
    with torch.no_grad():
        prior.raw_scales.copy_(torch.randn(4, 3, generator=gen, dtype=dtype))
        prior.active.copy_(torch.tensor(ACTIVE))
    return prior


def scipy_log_prob(prior: GaussianMixturePrior, x: np.ndarray) -> np.ndarray:
    """Equal-weight mixture of the active diagonal Gaussians, computed with scipy."""
    means = prior.means.detach().numpy()
    scales = np.log1p(np.exp(prior.raw_scales.detach().numpy()))
    active = [k for k, a in enumerate(prior.active.tolist()) if a]
    per = np.stack([norm.logpdf(x, means[k], scales[k]).sum(-1) for k in active], axis=-1)
    return logsumexp(per, axis=-1) - np.log(len(active))


def test_log_prob_matches_scipy_with_inactive_slots() -> None:
    prior = random_prior()
    x = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 3
    expected = scipy_log_prob(prior, x.numpy())
    np.testing.assert_allclose(prior.log_prob(x).detach().numpy(), expected, rtol=1e-12)
    fused, _ = prior.log_prob_and_score(x)
    np.testing.assert_allclose(fused.detach().numpy(), expected, rtol=1e-12)
    components = prior.component_log_prob(x)
    assert torch.isinf(components[:, [1, 3]]).all()


def test_log_prob_float32_close_to_scipy() -> None:
    prior = random_prior(torch.float32)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(1)) * 3
    expected = scipy_log_prob(prior, x.double().numpy())
    np.testing.assert_allclose(prior.log_prob(x).detach().numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("k_max", [1, 4])
def test_score_is_gradient_of_log_prob(k_max: int) -> None:
    prior = random_prior() if k_max == 4 else GaussianMixturePrior(1, 3, init_std=0.7).double()
    x = torch.randn(40, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    x.requires_grad_(True)
    (expected,) = torch.autograd.grad(prior.log_prob(x).sum(), x)
    torch.testing.assert_close(prior.score(x), expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(prior.log_prob_and_score(x)[1], expected, rtol=1e-9, atol=1e-12)
    terms = prior.score_terms()  # as a rollout computes them once for all its steps
    torch.testing.assert_close(prior.score(x, terms), expected, rtol=1e-9, atol=1e-12)


def test_sampling_moments_and_components() -> None:
    prior = random_prior()
    n = 200_000
    x, components = prior.rsample_with_components(n, torch.Generator().manual_seed(3))
    counts = torch.bincount(components, minlength=4).double() / n
    torch.testing.assert_close(
        counts, torch.tensor([0.5, 0, 0.5, 0], dtype=torch.float64), atol=5e-3, rtol=0
    )
    means = prior.means.detach()[[0, 2]]
    var = torch.nn.functional.softplus(prior.raw_scales.detach()[[0, 2]]) ** 2
    mix_mean = means.mean(0)
    mix_var = (var + means**2).mean(0) - mix_mean**2
    se = (mix_var / n).sqrt()
    assert ((x.detach().mean(0) - mix_mean).abs() < 5 * se).all()
    torch.testing.assert_close(x.detach().var(0), mix_var, rtol=2e-2, atol=0)


def test_gradients_reach_means_and_scales_not_weights() -> None:
    prior = random_prior()
    assert {name for name, _ in prior.named_parameters()} == {"means", "raw_scales"}
    x = prior.rsample(1000, torch.Generator().manual_seed(4))
    (x.square().sum() + prior.log_prob(x).sum()).backward()
    for grad in (prior.means.grad, prior.raw_scales.grad):
        assert torch.isfinite(grad).all()
        assert (grad[[0, 2]].abs() > 0).all()
        assert (grad[[1, 3]] == 0).all()


def test_no_nan_gradients_from_degenerate_masked_slots() -> None:
    for dtype in (torch.float32, torch.float64):
        prior = random_prior(dtype)
        with torch.no_grad():
            prior.means[1] = 1e30
            prior.raw_scales[3] = -1e4  # softplus underflows to 0
        reference = random_prior(dtype)
        x = prior.rsample(100, torch.Generator().manual_seed(5))
        lp, score = prior.log_prob_and_score(x)
        loss = prior.log_prob(x).sum() + prior.score(x).sum() + lp.sum() + score.sum()
        loss.backward()
        assert (
            torch.isfinite(prior.means.grad).all() and torch.isfinite(prior.raw_scales.grad).all()
        )
        torch.testing.assert_close(prior.log_prob(x), reference.log_prob(x))


def test_activate_adds_one_component_and_changes_nothing_else() -> None:
    prior = random_prior()
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    mean, scale = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64), 0.3
    slot = prior.activate(mean, scale)
    assert slot == 1 and prior.n_active == 3
    after = prior.state_dict()
    keep = [0, 2, 3]
    torch.testing.assert_close(after["means"][keep], before["means"][keep], rtol=0, atol=0)
    torch.testing.assert_close(
        after["raw_scales"][keep], before["raw_scales"][keep], rtol=0, atol=0
    )
    torch.testing.assert_close(after["means"][1], mean)
    torch.testing.assert_close(prior.scales[1], torch.full((3,), scale, dtype=torch.float64))
    x = np.random.default_rng(6).normal(size=(20, 3))
    np.testing.assert_allclose(
        prior.log_prob(torch.from_numpy(x)).detach().numpy(), scipy_log_prob(prior, x), rtol=1e-12
    )
    prior.activate(mean, torch.full((3,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="already active"):
        prior.activate(mean, scale)


def test_fixed_gaussian_has_frozen_parameters() -> None:
    prior = GaussianMixturePrior(1, 2, learn=False, init_std=2.0)
    assert not any(p.requires_grad for p in prior.parameters())
    torch.testing.assert_close(prior.scales, torch.full((1, 2), 2.0))
    x = torch.tensor([[1.0, -1.0]])
    torch.testing.assert_close(
        prior.log_prob(x), torch.tensor([norm.logpdf([1.0, -1.0], 0, 2).sum()], dtype=torch.float32)
    )
