"""Multilayer perceptrons as plain tensors: `params[f"{prefix}.{i}.weight"]` and `.bias`."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

Params = Mapping[str, Tensor]
"""Named tensors of a model (weights, biases, index buffers)."""


def init_mlp(
    sizes: Sequence[int], prefix: str, generator: torch.Generator, zero_last: bool = False
) -> dict[str, Tensor]:
    """Float32 weights of a ReLU MLP with layer widths `sizes` (PyTorch's Linear initialisation).

    `zero_last` starts the output layer at zero, so the MLP first outputs exactly 0.
    """
    params: dict[str, Tensor] = {}
    n_layers = len(sizes) - 1
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        bound = 0.0 if zero_last and i == n_layers - 1 else 1.0 / math.sqrt(n_in)
        for name, shape in (("weight", (n_out, n_in)), ("bias", (n_out,))):
            uniform = torch.rand(shape, generator=generator, dtype=torch.float32)
            params[f"{prefix}.{i}.{name}"] = (2 * uniform - 1) * bound
    return params


def apply_mlp(params: Params, prefix: str, n_layers: int, x: Tensor) -> Tensor:
    """Output of the ReLU MLP `prefix` with `n_layers` linear layers at a batch `x`."""
    for i in range(n_layers):
        x = F.linear(x, params[f"{prefix}.{i}.weight"], params[f"{prefix}.{i}.bias"])
        if i < n_layers - 1:
            x = torch.relu(x)
    return x
