"""Imports every target module so that each one registers itself."""

from targets import funnel, mixtures  # noqa: F401
