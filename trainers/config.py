"""Typed configuration of a training run (pydantic), with the authors' defaults of PAPER.md §4."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    """Base model: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TargetSpec(_Strict):
    """Which target to sample: a registry name and its keyword arguments."""

    name: str = "funnel"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class PriorConfig(_Strict):
    """The Gaussian-mixture prior: K_max slots, K_init active, diagonal scales."""

    k_max: int = Field(1, ge=1, description="pre-allocated mixture components")
    k_init: int | None = Field(
        None, ge=1, description="components active at the start; none: k_max, or 1 with IMR"
    )
    learn: bool = Field(True, description="False: a fixed Gaussian (classical sampler)")
    init_std: float = Field(1.0, gt=0, description="initial scale of every component")
    init_mean_std: float = Field(0.0, ge=0, description="means drawn from N(0, s^2 I); 0: at 0")

    @model_validator(mode="after")
    def _k_init_fits(self) -> PriorConfig:
        if self.k_init is not None and self.k_init > self.k_max:
            raise ValueError(f"k_init ({self.k_init}) must be <= k_max ({self.k_max})")
        return self


class TimeConfig(_Strict):
    """Time discretisation: N steps, dt_n = softplus(theta) * s(n), learnable friction."""

    n_steps: int = Field(128, ge=1)
    schedule: Literal["cosine", "linear", "constant", "per_step"] = "cosine"
    init_dt: float = Field(0.01, gt=0)
    learn_dt: bool = True
    init_sigma2: float = Field(1.0, gt=0, description="1 / friction at the start")
    learn_friction: bool = True
    per_dim_friction: bool = False


class NetworkConfig(_Strict):
    """The PIS-grad control network."""

    hidden: int = Field(128, ge=1)
    n_layers: int = Field(2, ge=1)
    n_time_features: int = Field(128, ge=1)
    use_target_score: bool = True
    inner_clip: float = Field(1e2, gt=0)
    outer_clip: float = Field(1e4, gt=0)
    score_scale_init: float = Field(1.0, description="initial scale of the target score (bias)")


class OptimConfig(_Strict):
    """Adam with separate learning rates, gradient clipping, NaN gradients zeroed."""

    lr_network: float = Field(5e-4, gt=0)
    lr_prior: float = Field(1e-2, gt=0)
    lr_time: float = Field(1e-2, gt=0)
    grad_clip: float | None = Field(1.0, gt=0)


class MalaConfig(_Strict):
    """Batched MALA used for IMR candidates."""

    n_chains: int = Field(64, ge=1)
    n_steps: int = Field(200, ge=1)
    step_size: float = Field(0.1, gt=0, description="initial step size h: x + h grad + sqrt(2h) xi")
    target_accept: float = Field(0.574, gt=0, lt=1)
    adapt_fraction: float = Field(
        0.5, ge=0, lt=1, description="leading share of n_steps that adapts the step size"
    )
    per_chain: bool = Field(False, description="adapt one step size per chain, not one shared")


class IMRConfig(_Strict):
    """Iterative Model Refinement: add a component every `interval` iterations up to k_max."""

    enabled: bool = False
    interval: int = Field(1000, ge=1)
    new_std: Literal["init", "mean_active"] = "init"
    mala: MalaConfig = Field(default_factory=MalaConfig)


class TrainerConfig(_Strict):
    """Everything a `Trainer` needs: target, sampler, prior, time, network, optimiser, IMR."""

    target: TargetSpec = Field(default_factory=TargetSpec)
    sampler: Literal["dis"] = "dis"
    loss: Literal["rkl", "logvar"] = "rkl"
    batch_size: int = Field(2000, ge=1)
    eval_samples: int = Field(2000, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    compile: bool = False
    checkpoint_steps: bool = Field(
        False, description="recompute each integrator step in the backward pass (saves memory)"
    )
    prior: PriorConfig = Field(default_factory=PriorConfig)
    time: TimeConfig = Field(default_factory=TimeConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    imr: IMRConfig = Field(default_factory=IMRConfig)

    @property
    def initial_components(self) -> int:
        """Components active at the start: `prior.k_init`, else 1 with IMR and k_max without."""
        if self.prior.k_init is not None:
            return self.prior.k_init
        return 1 if self.imr.enabled else self.prior.k_max
