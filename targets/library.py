"""Imports every target module so that each one registers itself."""

from targets import brownian, funnel, image_flows, lgcp, logistic, mixtures, seeds  # noqa: F401
