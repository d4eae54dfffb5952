"""Target densities of the GMP benchmark behind one interface and a registry."""

from targets import plugins
from targets.base import SupportRegion, Target, TargetArgumentError, TargetError
from targets.data import DataError, data_path
from targets.registry import TargetInfo, check_arguments, info, make, names, parameters

__all__ = [
    "DataError",
    "SupportRegion",
    "Target",
    "TargetArgumentError",
    "TargetError",
    "TargetInfo",
    "check_arguments",
    "data_path",
    "info",
    "make",
    "names",
    "parameters",
    "plugins",
]
