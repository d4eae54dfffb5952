"""Diffusion samplers with learnable Gaussian-mixture priors, trained in plain torch."""

from trainers.config import TrainerConfig
from trainers.integrator import Rollout, Sampler
from trainers.network import ControlNetwork
from trainers.prior import GaussianMixturePrior
from trainers.samplers import CMCD, DBS, DIS, MCD, SAMPLERS, AnnealedLangevinSampler, build_sampler
from trainers.time_schedule import TimeSchedule
from trainers.trainer import EvalResult, Trainer, load

__all__ = [
    "CMCD",
    "DBS",
    "DIS",
    "MCD",
    "SAMPLERS",
    "AnnealedLangevinSampler",
    "ControlNetwork",
    "EvalResult",
    "GaussianMixturePrior",
    "Rollout",
    "Sampler",
    "TimeSchedule",
    "Trainer",
    "TrainerConfig",
    "build_sampler",
    "load",
]
