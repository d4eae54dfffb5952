"""The built-in targets: importing this module imports every target module of the package, and
each registers itself with targets.registry (targets of your own come from plugins)."""

from targets import brownian, funnel, image_flows, lgcp, logistic, mixtures, seeds  # noqa: F401
