"""Imports every target module so that each one registers itself."""

from targets import brownian, funnel, logistic, mixtures, seeds  # noqa: F401
