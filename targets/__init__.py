"""Target densities of the GMP benchmark behind one interface and a registry."""

from targets.base import SupportRegion, Target, TargetError
from targets.data import DataError, data_path
from targets.registry import info, make, names, parameters

__all__ = [
    "DataError",
    "SupportRegion",
    "Target",
    "TargetError",
    "data_path",
    "info",
    "make",
    "names",
    "parameters",
]
