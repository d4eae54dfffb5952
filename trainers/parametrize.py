"""Positive parameters stored unconstrained: value = softplus(raw)."""

from __future__ import annotations

import torch
from torch import Tensor


def inverse_softplus(value: Tensor) -> Tensor:
    """The raw values whose softplus is `value` (> 0), stable for large values."""
    return value + torch.log(-torch.expm1(-value))


def softplus_parameter(value: float, shape: tuple[int, ...], learn: bool) -> torch.nn.Parameter:
    """A raw parameter of `shape` filled so that softplus(raw) == `value`; frozen unless `learn`."""
    if value <= 0:
        raise ValueError(f"softplus is positive; cannot represent {value}")
    raw = inverse_softplus(torch.full(shape, float(value), dtype=torch.float64))
    return torch.nn.Parameter(raw.to(torch.get_default_dtype()), requires_grad=learn)


def positive(raw: Tensor) -> Tensor:
    """softplus(raw), the constrained value of a raw parameter."""
    return torch.nn.functional.softplus(raw)
