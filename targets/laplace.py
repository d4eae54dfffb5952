"""The log normaliser of a unimodal target by importance sampling from its Laplace approximation.

The proposal is a multivariate Student-t centred at the target's mode with the inverse Hessian
of -log rho there as its scale matrix (times `widen`): heavier tails than the posterior's, so the
importance weights stay bounded. Used to give the Bayesian logistic-regression targets a
best-known log Z, which turns a sampler's ELBO gap into its KL divergence from the posterior.

Usage: python -m targets.laplace TARGET [--arg NAME=VALUE ...] [--samples 200000] [--batches 10]
e.g. python -m targets.laplace credit --arg prior_scale=10
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
import yaml
from torch import Tensor

from targets.base import Target
from targets.registry import make


@dataclass(frozen=True)
class LogZEstimate:
    """log Z, its standard error over `batches` independent estimates, and the proposal's
    importance-sampling efficiency (ESS / samples, in [0, 1])."""

    log_z: float
    standard_error: float
    efficiency: float


def mode(target: Target, start: Tensor | None = None) -> Tensor:
    """The maximiser of log rho (float64), by L-BFGS from `start` (default: the origin)."""
    x = (torch.zeros(target.dim) if start is None else start).to(torch.float64).requires_grad_()
    optimizer = torch.optim.LBFGS(
        [x], max_iter=1000, tolerance_grad=1e-10, tolerance_change=0, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = -target.log_prob(x[None])[0]
        loss.backward()
        return loss

    optimizer.step(closure)
    return x.detach()


def laplace_log_z(
    target: Target,
    samples: int = 200_000,
    batches: int = 10,
    generator: torch.Generator | None = None,
    dof: int = 10,
    widen: float = 1.2,
) -> LogZEstimate:
    """log Z of `target` from `batches` importance-sampling estimates of `samples` draws each."""
    centre = mode(target)
    hessian = torch.autograd.functional.hessian(lambda x: -target.log_prob(x[None])[0], centre)
    chol = torch.linalg.cholesky(torch.linalg.inv(hessian)) * widen
    d = target.dim
    log_norm = (
        math.lgamma((dof + d) / 2)
        - math.lgamma(dof / 2)
        - d / 2 * math.log(dof * math.pi)
        - chol.diagonal().log().sum().item()
    )
    estimates, efficiencies = [], []
    for _ in range(batches):
        z = torch.randn(samples, d, generator=generator, dtype=torch.float64)
        chi2 = torch.randn(samples, dof, generator=generator, dtype=torch.float64).square().sum(1)
        x = centre + (z @ chol.T) / torch.sqrt(chi2 / dof)[:, None]
        whitened = torch.linalg.solve_triangular(chol, (x - centre).T, upper=False)
        log_q = log_norm - (dof + d) / 2 * torch.log1p(whitened.square().sum(0) / dof)
        log_w = target.log_prob(x) - log_q
        estimates.append((torch.logsumexp(log_w, 0) - math.log(samples)).item())
        efficiencies.append(torch.softmax(log_w, 0).square().sum().reciprocal().item() / samples)
    mean = sum(estimates) / batches
    spread = math.sqrt(sum((e - mean) ** 2 for e in estimates) / (batches - 1) / batches)
    return LogZEstimate(mean, spread, min(efficiencies))


def main() -> None:
    """Print the log Z estimate of a registered target built with the given arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target")
    parser.add_argument("--arg", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--samples", type=int, default=200_000)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kwargs = {}
    for item in args.arg:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--arg {item!r}: expected NAME=VALUE")
        kwargs[name] = yaml.safe_load(value)
    generator = torch.Generator().manual_seed(args.seed)
    estimate = laplace_log_z(make(args.target, **kwargs), args.samples, args.batches, generator)
    arguments = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    print(
        f"{args.target}({arguments}): log Z = {estimate.log_z:.4f} "
        f"± {estimate.standard_error:.4f} (standard error over {args.batches} batches of "
        f"{args.samples:,}); importance-sampling efficiency {estimate.efficiency:.3f}"
    )


if __name__ == "__main__":
    main()
