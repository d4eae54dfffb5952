"""The PIS-grad control network u(x, t, grad log pi) of PAPER.md §1."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from trainers import native
from trainers.config import NetworkConfig

LAST_LAYER_WEIGHT = 1e-8  # constant initial weight of both output layers ("~0")
FREQUENCY_RANGE = (0.1, 100.0)  # Fourier feature frequencies, linearly spaced


@dataclass(frozen=True)
class StateWeights:
    """The state MLP's weights as its matrix products take them (transposed), prepared once
    for all the steps of a rollout."""

    x_weight_t: Tensor  # the first layer's state part, transposed [d, hidden]
    weights_t: tuple[Tensor, ...]  # weight^T of each later layer
    biases: tuple[Tensor, ...]  # bias of each later layer


class TimeTerms(NamedTuple):
    """What the network needs of the time, for a grid of times [T, ...] or one of its rows,
    and its state weights (the same for every time)."""

    state_bias: Tensor  # first state layer's time part (+ bias) [T, hidden]
    score_scale: Tensor | None  # per-dimension scale of the target score [T, d]; None if unused
    weights: StateWeights

    def row(self, i: int) -> TimeTerms:
        """The terms of the grid's time `i`."""
        scale = None if self.score_scale is None else self.score_scale[i]
        return TimeTerms(self.state_bias[i], scale, self.weights)


def _lecun_normal_(linear: nn.Linear, generator: torch.Generator | None) -> nn.Linear:
    """Flax's default Dense init: truncated-normal weights with variance 1 / fan_in, zero bias."""
    std = math.sqrt(1.0 / linear.in_features) / 0.87962566103423978
    nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std, generator=generator)
    nn.init.zeros_(linear.bias)
    return linear


def _constant_(linear: nn.Linear, weight: float, bias: float) -> nn.Linear:
    """An output layer started at a constant: all weights `weight`, all biases `bias`."""
    nn.init.constant_(linear.weight, weight)
    nn.init.constant_(linear.bias, bias)
    return linear


GELU_APPROXIMATION = {"gelu": "none", "gelu_tanh": "tanh"}  # NetworkConfig.activation -> torch


class Gelu(nn.Module):
    """GELU as trainers/native.py computes it (gmp's compiled exact GELU on the CPU)."""

    def __init__(self, approximate: str) -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, x: Tensor) -> Tensor:
        """GELU(x), elementwise."""
        return native.gelu(x, self.approximate)


def _gelu_mlp(
    layers: list[nn.Linear], activation: str, leading_gelu: bool = False
) -> nn.Sequential:
    """Linear layers with a GELU (`activation`, see NetworkConfig) before each but the first.

    `leading_gelu` puts one before the first layer too (for an MLP whose input layer lives
    elsewhere).
    """
    modules: list[nn.Module] = []
    for i, layer in enumerate(layers):
        if i or leading_gelu:
            modules.append(Gelu(GELU_APPROXIMATION[activation]))
        modules.append(layer)
    return nn.Sequential(*modules)


class FourierTimeFeatures(nn.Module):
    """[sin(f t + phase), cos(f t + phase)] with fixed frequencies f and a learnable phase."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.register_buffer("frequencies", torch.linspace(*FREQUENCY_RANGE, n_features))
        self.phase = nn.Parameter(torch.zeros(n_features))

    def forward(self, t: Tensor) -> Tensor:
        """Features of times `t` [T] -> [T, 2 * n_features]."""
        angle = t.unsqueeze(-1) * self.frequencies + self.phase
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class ControlNetwork(nn.Module):
    """u(x, t, s) = clip(f(x, t) + g(t) * clip(s, inner), outer), s the target score.

    f: an MLP of [x, h(t)] (h an MLP of the Fourier time features) with `n_layers` GELU layers
    of width `hidden` and an output layer started at ~0; g: an MLP of the time features giving a
    per-dimension scale, its output layer started at weight ~0 and bias `score_scale_init`.
    Settings the configuration leaves open take DIS's defaults (score fed, scale 1).
    All time-only parts are computed by `time_terms` for a grid of times at once; `control`
    then does the per-state work of one step.
    """

    def __init__(
        self, dim: int, config: NetworkConfig, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        config = config.with_defaults(use_target_score=True, score_scale_init=1.0)
        self.dim = dim
        self.inner_clip = config.inner_clip
        self.outer_clip = config.outer_clip
        self.time_input = config.time_input
        hidden, n_feat = config.hidden, config.n_time_features

        def dense(n_in: int, n_out: int) -> nn.Linear:
            return _lecun_normal_(nn.Linear(n_in, n_out), generator)

        self.time_features = FourierTimeFeatures(n_feat)
        activation = config.activation
        self.time_embedding = _gelu_mlp(
            [dense(2 * n_feat, hidden), dense(hidden, hidden)], activation
        )
        state_layers = [dense(dim + hidden, hidden)]
        state_layers += [dense(hidden, hidden) for _ in range(config.n_layers - 1)]
        state_layers.append(_constant_(nn.Linear(hidden, dim), LAST_LAYER_WEIGHT, 0.0))
        self.state_input = state_layers[0]
        # `control` applies the GELUs itself (functional, on `state_weights`); the Sequential
        # keeps them only so that the layers' parameter names, and saved checkpoints, stay.
        self.state_net = _gelu_mlp(state_layers[1:], activation, leading_gelu=True)
        self.approximate = GELU_APPROXIMATION[activation]
        self.score_net: nn.Sequential | None = None
        if config.use_target_score:
            score_layers = [dense(2 * n_feat, hidden)]
            score_layers += [dense(hidden, hidden) for _ in range(config.n_layers)]
            score_layers.append(
                _constant_(nn.Linear(hidden, dim), LAST_LAYER_WEIGHT, config.score_scale_init)
            )
            self.score_net = _gelu_mlp(score_layers, activation)

    def step_times(self, n_steps: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        """The times of steps n = 0..N [N + 1] as the network sees them (`time_input`)."""
        steps = torch.arange(n_steps + 1, device=device, dtype=dtype)
        return steps / n_steps if self.time_input == "fraction" else steps

    def time_terms(self, t: Tensor) -> TimeTerms:
        """The time-only parts of the network for times `t` [T] (see `step_times`)."""
        features = self.time_features(t)
        embedding = self.time_embedding(features)
        weight_t = self.state_input.weight[:, self.dim :]
        state_bias = torch.addmm(self.state_input.bias, embedding, weight_t.T)
        score_scale = None if self.score_net is None else self.score_net(features)
        return TimeTerms(state_bias, score_scale, self.state_weights())

    def state_weights(self) -> StateWeights:
        """The state MLP's weights, transposed as `control` multiplies by them."""
        layers = [m for m in self.state_net if isinstance(m, nn.Linear)]
        return StateWeights(
            self.state_input.weight[:, : self.dim].T,
            tuple(m.weight.T for m in layers),
            tuple(m.bias for m in layers),
        )

    def control(self, x: Tensor, terms: TimeTerms, score: Tensor | None) -> Tensor:
        """u for states `x` [B, d] at one time (a row of `time_terms`), target score [B, d].

        Within a rollout that uses the compiled step (trainers/native.py), its twin of this
        function computes it, with the same operators in the same order.
        """
        weights = terms.weights
        compiled = native.active()
        if compiled is not None:
            return compiled.network_control(
                x,
                terms.state_bias,
                weights.x_weight_t,
                weights.weights_t,
                weights.biases,
                self.approximate,
                terms.score_scale,
                score,
                self.inner_clip,
                self.outer_clip,
            )
        out = torch.addmm(terms.state_bias, x, weights.x_weight_t)
        for weight_t, bias in zip(weights.weights_t, weights.biases, strict=True):
            out = torch.addmm(
                bias, native.gelu(out, self.approximate, overwrite_input=True), weight_t
            )
        if terms.score_scale is not None:
            if score is None:
                raise ValueError("this network scales the target score: pass `score`")
            out = out + terms.score_scale * score.clamp(-self.inner_clip, self.inner_clip)
        # hardtanh is clamp with a one-kernel backward pass (clamp's takes four); the two differ
        # only in the gradient at exactly +-outer_clip
        return F.hardtanh(out, -self.outer_clip, self.outer_clip)

    def forward(self, x: Tensor, t: Tensor, score: Tensor | None = None) -> Tensor:
        """u(x, t, score) for states `x` [B, d] at one time `t` (a 0-d tensor)."""
        return self.control(x, self.time_terms(t.reshape(1)).row(0), score)
