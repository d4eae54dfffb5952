"""Log Z by importance sampling from the Laplace approximation, and credit's stored log Z."""

import math

import pytest
import torch

import targets
from orchestrator.spec import SpecError, parse_spec
from targets.base import Target
from targets.laplace import laplace_log_z, mode
from targets.logistic import CREDIT_LOG_Z
from targets.registry import info


class LogisticProduct(Target):
    """Independent logistic densities with rates a_j and centres m_j, times e^c:
    log rho = c + sum_j (log a_j - u_j - 2 log(1 + e^-u_j)), u = a (x - m). log Z = c exactly,
    and its tails are heavier than those of its Laplace approximation."""

    def __init__(self) -> None:
        super().__init__()
        self.dim = 6
        self.rates = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.8, 1.5], dtype=torch.float64)
        self.centre = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, -1.0], dtype=torch.float64)
        self.constant = -3.25

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        y = self.rates * (x - self.centre)
        return self.constant + (self.rates.log() - y - 2 * torch.nn.functional.softplus(-y)).sum(-1)


def test_a_known_normaliser_is_recovered_within_its_standard_error():
    target = LogisticProduct()
    assert torch.allclose(mode(target), target.centre, atol=1e-6)
    estimate = laplace_log_z(target, 50_000, 8, torch.Generator().manual_seed(1))
    assert estimate.standard_error < 0.01
    assert estimate.log_z == pytest.approx(target.constant, abs=4 * estimate.standard_error + 1e-3)
    assert 0.3 < estimate.efficiency <= 1


def test_a_normal_density_is_exact_up_to_sampling():
    """For a Gaussian the Laplace approximation is exact: every draw's weight is finite and
    the estimate sits on the closed form -d/2 log(2 pi) - sum log sigma (here with rho = N)."""

    class Normal(Target):
        def __init__(self) -> None:
            super().__init__()
            self.dim = 4
            self.scales = torch.tensor([0.1, 1.0, 5.0, 2.0], dtype=torch.float64)

        def log_prob(self, x: torch.Tensor) -> torch.Tensor:
            return (-0.5 * (x / self.scales).square()).sum(-1)

    target = Normal()
    exact = 0.5 * target.dim * math.log(2 * math.pi) + target.scales.log().sum().item()
    estimate = laplace_log_z(target, 50_000, 4, torch.Generator().manual_seed(2))
    assert estimate.log_z == pytest.approx(exact, abs=4 * estimate.standard_error + 1e-3)


@pytest.mark.parametrize("prior_scale", [None, 10.0])
def test_credit_stored_log_z_matches_a_fresh_estimate(prior_scale):
    target = targets.make("credit", **({} if prior_scale is None else {"prior_scale": prior_scale}))
    assert target.log_Z == CREDIT_LOG_Z[prior_scale]
    estimate = laplace_log_z(target, 50_000, 4, torch.Generator().manual_seed(3))
    assert estimate.efficiency > 0.2
    assert estimate.log_z == pytest.approx(target.log_Z, abs=max(4 * estimate.standard_error, 0.01))


def test_credit_log_z_is_known_only_where_it_was_computed():
    assert info("credit").log_Z
    assert info("credit", {"prior_scale": 10}).log_Z
    assert not info("credit", {"prior_scale": 3.0}).log_Z
    assert targets.make("credit", prior_scale=3.0).log_Z is None
    study = {
        "name": "credit-log-z",
        "target": {"name": "credit", "kwargs": {"prior_scale": 10}},
        "sampler": "dis",
        "search_space": {"prior.k_max": {"type": "categorical", "choices": [1, 2]}},
        "objective": {"metric": "delta_log_z", "direction": "minimize"},
        "budget": {"trials": 2, "iterations": 10, "eval_interval": 10},
    }
    assert parse_spec(study, "study.yaml").target.kwargs == {"prior_scale": 10}
    study["target"]["kwargs"] = {"prior_scale": 3.0}
    with pytest.raises(SpecError, match=r"objective.0.metric: .*'delta_log_z'.*'credit' has none"):
        parse_spec(study, "study.yaml")
