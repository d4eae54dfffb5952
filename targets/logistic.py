"""Bayesian logistic regression: German credit, breast cancer, Sonar and Ionosphere.

Model conventions (data/README.md): Credit and Cancer divide the features by their standard
deviation (not centred), prepend a column of ones and use the benchmark's likelihood alone,
sum_i log sigmoid(s_i x_i.w) with s_i = +1 where y_i = 0 and -1 where y_i = 1 (an optional
N(0, prior_scale^2) prior on every weight gives the later convention). Sonar and Ionosphere
standardise the features, prepend ones, and put an N(0, 1) prior on a Bernoulli-logit model
(s_i = +1 where y_i = 1).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from targets import uci
from targets.base import Target
from targets.data import DataFile, data_path
from targets.normal import normal_log_density
from targets.registry import register


class LogisticRegression(Target):
    """Posterior of weights w: sum_i log sigmoid(s_i x_i.w) + sum_j log N(w_j; 0, prior_scale^2).

    `design` [N, d] holds the rows x_i (intercept column included) and `signs` [N] the s_i in
    {-1, +1}; `prior_scale=None` drops the prior (likelihood only). `reference` names the data
    file of reference posterior samples (array `samples`, [M, d]), read on the first `sample`.
    """

    def __init__(
        self,
        name: str,
        design: np.ndarray,
        signs: np.ndarray,
        prior_scale: float | None,
        reference: str | None = None,
        log_Z: float | None = None,
    ) -> None:
        super().__init__()
        if prior_scale is not None and prior_scale <= 0:
            raise ValueError(f"prior_scale must be > 0 or None, got {prior_scale}")
        self.name = name
        self.dim = design.shape[1]
        self.prior_scale = prior_scale
        self.log_Z = log_Z
        self.register_buffer("signed_design", torch.from_numpy(signs[:, None] * design))
        self.has_samples = reference is not None
        self._reference_file = reference
        self._reference: Tensor | None = None

    def log_prob(self, x: Tensor) -> Tensor:
        return self._log_prob(x, x @ self.buffer("signed_design", x).T)

    def log_prob_and_score(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = x.detach()
        rows = self.buffer("signed_design", x)
        margins = x @ rows.T
        log_prob = self._log_prob(x, margins)
        return log_prob, self._score(x, margins, rows)

    def score(self, x: Tensor) -> Tensor:
        """grad_x log rho(x) in closed form, without evaluating log rho."""
        x = x.detach()
        rows = self.buffer("signed_design", x)
        return self._score(x, x @ rows.T, rows)

    def _score(self, x: Tensor, margins: Tensor, rows: Tensor) -> Tensor:
        """sum_i sigmoid(-m_i) s_i x_i (- w / prior_scale^2) from the margins m = x @ rows.T.

        Overwrites `margins` (in place: no second [B, N] buffer in the integrator's hot loop).
        """
        score = torch.sigmoid_(margins.neg_()) @ rows
        if self.prior_scale is not None:
            score = score - x / self.prior_scale**2
        return score

    def _log_prob(self, x: Tensor, margins: Tensor) -> Tensor:
        lp = F.logsigmoid(margins).sum(-1)
        if self.prior_scale is None:
            return lp
        return lp + normal_log_density(x, math.log(self.prior_scale)).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """`n` reference samples: distinct rows if there are enough, else drawn with replacement."""
        if self._reference_file is None:
            return super().sample(n, generator)
        if self._reference is None:
            with np.load(data_path(self._reference_file)) as archive:
                reference = torch.from_numpy(archive["samples"]).to(torch.float64)
            if reference.shape[1] != self.dim:
                raise ValueError(
                    f"{self._reference_file} holds {reference.shape[1]}-dimensional samples, "
                    f"target {self.name!r} has dim {self.dim}"
                )
            self._reference = reference
        count = len(self._reference)
        if n <= count:
            index = torch.randperm(count, generator=generator)[:n]
        else:
            index = torch.randint(count, (n,), generator=generator)
        return self._reference[index]


def with_intercept(features: np.ndarray) -> np.ndarray:
    """`features` [N, p] with a column of ones prepended: [N, p + 1]."""
    return np.hstack([np.ones((len(features), 1)), features])


def scaled_design(features: np.ndarray) -> np.ndarray:
    """Features divided by their standard deviation (not centred), intercept first."""
    return with_intercept(features / features.std(0))


def standardised_design(features: np.ndarray) -> np.ndarray:
    """Features standardised to mean 0 and std 1 (a zero std left as 1), intercept first."""
    std = features.std(0)
    return with_intercept((features - features.mean(0)) / np.where(std == 0, 1.0, std))


# Credit's log normaliser by prior scale, from `python -m targets.laplace credit
# [--arg prior_scale=S]` (importance sampling from the Laplace approximation, 2,000,000 draws,
# efficiency 0.35 to 0.39, standard error 0.001); tests/targets/test_laplace.py checks both
# against a fresh estimate.
CREDIT_LOG_Z = {None: -504.487, 10.0: -585.098}


def credit_log_z(prior_scale: float | None = None) -> float | None:
    """Credit's best-known log Z with the N(0, prior_scale^2) prior (None: unknown for it)."""
    return CREDIT_LOG_Z.get(None if prior_scale is None else float(prior_scale))


@register(
    "credit",
    dim="25",
    summary="German credit logistic regression (benchmark likelihood, optional prior)",
    log_Z=lambda prior_scale=None: credit_log_z(prior_scale) is not None,
    samples=True,
)
def credit(prior_scale: float | None = None) -> LogisticRegression:
    """German credit (1000 applicants, 24 features) with 10,000 reference posterior samples.

    The reference samples were drawn without a prior; with `prior_scale=10` the posterior moves by
    at most 0.05 in any coordinate (posterior standard deviations 0.08 and up). Without a prior
    or with `prior_scale=10` its log Z is known to about 0.001 (`credit_log_z`).
    """
    table = np.loadtxt(data_path(uci.GERMAN_CREDIT.name))
    labels = table[:, -1] - 1
    design = scaled_design(table[:, :-1])
    return LogisticRegression(
        "credit",
        design,
        1 - 2 * labels,
        prior_scale,
        uci.CREDIT_REFERENCE,
        credit_log_z(prior_scale),
    )


@register(
    "cancer",
    dim="31",
    summary="Breast-cancer (Wisconsin) logistic regression (benchmark likelihood, optional prior)",
)
def cancer(prior_scale: float | None = None) -> LogisticRegression:
    """Wisconsin diagnostic breast cancer (569 cases, 30 features, scikit-learn's copy)."""
    from sklearn.datasets import load_breast_cancer  # deferred: scikit-learn is slow to import

    features, labels = load_breast_cancer(return_X_y=True)
    return LogisticRegression("cancer", scaled_design(features), 1 - 2 * labels, prior_scale)


def _bernoulli_logit(name: str, source: DataFile, prior_scale: float | None) -> LogisticRegression:
    with np.load(data_path(source.name)) as archive:
        features, labels = archive["X"], archive["y"]
    return LogisticRegression(name, standardised_design(features), 2 * labels - 1, prior_scale)


@register("sonar", dim="61", summary="Sonar (rock vs mine) logistic regression, N(0, 1) prior")
def sonar(prior_scale: float | None = 1.0) -> LogisticRegression:
    """UCI Sonar (208 returns, 60 features), Bernoulli-logit with label 1 = rock."""
    return _bernoulli_logit("sonar", uci.SONAR, prior_scale)


@register("ionosphere", dim="35", summary="Ionosphere logistic regression, N(0, 1) prior")
def ionosphere(prior_scale: float | None = 1.0) -> LogisticRegression:
    """UCI Ionosphere (351 returns, 34 features), Bernoulli-logit with label 1 = good."""
    return _bernoulli_logit("ionosphere", uci.IONOSPHERE, prior_scale)
