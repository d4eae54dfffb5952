"""Imports every target module so that each one registers itself."""

from targets import brownian, funnel, lgcp, logistic, mixtures, nice, seeds  # noqa: F401
