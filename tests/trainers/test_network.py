"""The PIS-grad control network: initialisation, time features, concatenation and clipping."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from trainers.config import NetworkConfig
from trainers.network import ControlNetwork


def make(dim: int = 3, **config: object) -> ControlNetwork:
    cfg = NetworkConfig(hidden=16, n_time_features=8, **config)
    return ControlNetwork(dim, cfg, torch.Generator().manual_seed(0)).double()


def inputs(dim: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(20, dim, generator=gen, dtype=torch.float64)
    return x, 300 * torch.randn(20, dim, generator=gen, dtype=torch.float64)


def test_initial_output_is_the_clipped_target_score() -> None:
    net = make()
    x, score = inputs()
    u = net(x, torch.tensor(0.3, dtype=torch.float64), score)
    torch.testing.assert_close(u, score.clamp(-100, 100), atol=1e-4, rtol=0)


def test_fourier_features() -> None:
    net = make()
    with torch.no_grad():
        net.time_features.phase.fill_(0.2)
    t = torch.tensor([0.0, 0.5], dtype=torch.float64)
    freq = torch.linspace(0.1, 100, 8).double()  # a float32 buffer, as built
    angle = t[:, None] * freq + 0.2
    expected = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)
    torch.testing.assert_close(net.time_features(t), expected)


def gelu_exact(x: torch.Tensor) -> torch.Tensor:
    """x Phi(x), Phi the standard normal CDF."""
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU (flax's default)."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize(("activation", "gelu"), [("gelu", gelu_exact), ("gelu_tanh", gelu_tanh)])
def test_state_net_sees_the_concatenation_of_state_and_time_embedding(
    activation: str, gelu: Callable[[torch.Tensor], torch.Tensor]
) -> None:
    net = make(n_layers=3, activation=activation)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    x, score = inputs()
    t = torch.tensor(0.7, dtype=torch.float64)
    features = net.time_features(t.reshape(1))
    first, second = (m for m in net.time_embedding if isinstance(m, nn.Linear))
    embedding = second(gelu(first(features))).expand(len(x), -1)
    hidden = net.state_input(torch.cat([x, embedding], dim=-1))
    linears = [m for m in net.state_net if isinstance(m, nn.Linear)]
    assert len(linears) == 3
    for layer in linears:
        hidden = layer(gelu(hidden))
    expected = hidden + net.score_net(features) * score.clamp(-100, 100)
    torch.testing.assert_close(net(x, t, score), expected.clamp(-1e4, 1e4))
    terms = net.time_terms(torch.tensor([0.1, 0.7], dtype=torch.float64))
    stepwise = net.control(x, terms.row(1), score)
    torch.testing.assert_close(stepwise, net(x, t, score))


def test_outer_clip_and_network_without_score() -> None:
    net = make(outer_clip=50.0, score_scale_init=10.0)
    x, score = inputs()
    u = net(x, torch.tensor(0.0, dtype=torch.float64), score).detach()
    assert u.abs().max() <= 50 and math.isclose(float(u.abs().max()), 50)
    plain = make(use_target_score=False)
    assert plain.score_net is None
    t = torch.tensor(0.5, dtype=torch.float64)
    torch.testing.assert_close(plain(x, t), torch.zeros_like(x), atol=1e-5, rtol=0)


def test_an_output_past_the_outer_clip_passes_no_gradient() -> None:
    """At the start u = 10 s (a score scale of 10, the state part ~0): du/ds is 10 where
    |10 s| < 50 and 0 where the clip holds u at +-50."""
    net = make(outer_clip=50.0, score_scale_init=10.0)
    x, score = inputs()
    score = (score / 100).requires_grad_()  # std 3: most of 10 s inside the clip, some past it
    u = net(x, torch.tensor(0.0, dtype=torch.float64), score)
    (grad,) = torch.autograd.grad(u.sum(), score)
    inside = (10 * score.detach()).abs() < 50
    assert 0 < int(inside.sum()) < inside.numel()
    torch.testing.assert_close(grad, 10.0 * inside.double(), atol=1e-6, rtol=0)


def test_the_time_that_the_network_sees_at_each_step() -> None:
    """`fraction` feeds n / N (our default), `step` the index n itself (the authors' code)."""
    fraction, step = make(), make(time_input="step")
    steps = torch.arange(5, dtype=torch.float64)
    torch.testing.assert_close(fraction.step_times(4, "cpu", torch.float64), steps / 4)
    torch.testing.assert_close(step.step_times(4, "cpu", torch.float64), steps)
    # the same weights, so the step-index network at t = 3 is the fraction network at t = 3
    step.load_state_dict(fraction.state_dict())
    x, score = inputs()
    with torch.no_grad():
        step.state_net[-1].weight.normal_(generator=torch.Generator().manual_seed(2))
        fraction.state_net[-1].weight.copy_(step.state_net[-1].weight)
    at_three = torch.tensor(3.0, dtype=torch.float64)
    torch.testing.assert_close(step(x, at_three, score), fraction(x, at_three, score))
    terms = step.time_terms(step.step_times(4, "cpu", torch.float64))
    torch.testing.assert_close(
        step.control(x, terms.row(3), score),
        fraction(x, at_three, score),
    )
