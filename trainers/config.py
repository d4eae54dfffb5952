"""Typed configuration of a training run (pydantic), with the authors' defaults (paper §4)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from targets.base import SupportRegion

SamplerName = Literal["dis", "mcd", "cmcd", "dbs"]  # the rows of PAPER.md §1's table


class _Strict(BaseModel):
    """Base model: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TargetSpec(_Strict):
    """Which target to sample: a name and its keyword arguments."""

    name: str = Field(
        "funnel",
        description="a registered target (`gmp targets` lists them), a `module:function` or "
        "`module:Class` reference to one's own (docs/custom-targets.md), or an installed "
        "`gmp.targets` entry point",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the target (e.g. dim)"
    )


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

    n_steps: int = Field(128, ge=1, description="diffusion steps N")
    schedule: Literal["cosine", "linear", "constant", "per_step"] = Field(
        "cosine",
        description="shape s(n) of the step sizes; per_step: one learned step size per step",
    )
    init_dt: float = Field(0.01, gt=0, description="initial step size scale softplus(theta)")
    learn_dt: bool = Field(True, description="learn the step sizes (so the time horizon)")
    init_sigma2: float = Field(1.0, gt=0, description="1 / friction at the start")
    learn_friction: bool = Field(True, description="learn the friction")
    per_dim_friction: bool = Field(False, description="one friction per dimension")
    learned_value: Literal["sigma2", "friction"] = Field(
        "sigma2",
        description="what softplus of the learned parameter is: sigma2 = 1 / friction itself, "
        "or the friction, sigma2 = 1 / softplus(raw) (the authors' code); the same start, "
        "different paces under Adam",
    )


class NetworkConfig(_Strict):
    """The PIS-grad control network."""

    hidden: int = Field(128, ge=1, description="width of the hidden layers")
    n_layers: int = Field(2, ge=1, description="hidden layers")
    n_time_features: int = Field(128, ge=1, description="Fourier features of the time")
    use_target_score: bool | None = Field(
        None,
        description="feed the (detached) target score to the network; none: the sampler's "
        "default (DIS: yes; MCD/CMCD/DBS: no, their base drift already holds it)",
    )
    inner_clip: float = Field(1e2, gt=0, description="clip of the target score term")
    outer_clip: float = Field(1e4, gt=0, description="clip of the network's output")
    time_input: Literal["fraction", "step"] = Field(
        "fraction",
        description="the time that the Fourier features see at step n of N: fraction = n / N; "
        "step = n itself (the authors' code)",
    )
    score_scale_init: float | None = Field(
        None,
        description="initial scale of the target score (bias); none: the sampler's default "
        "(DIS: 1; MCD/CMCD/DBS: 0)",
    )
    activation: Literal["gelu", "gelu_tanh"] = Field(
        "gelu",
        description="the GELU between layers: gelu = exact (x Phi(x)); gelu_tanh = its tanh "
        "approximation (flax's default, the authors' code)",
    )

    def with_defaults(self, use_target_score: bool, score_scale_init: float) -> NetworkConfig:
        """This configuration with the fields left open (None) set to a sampler's defaults."""
        defaults = {"use_target_score": use_target_score, "score_scale_init": score_scale_init}
        return self.model_copy(
            update={key: value for key, value in defaults.items() if getattr(self, key) is None}
        )


class DriftConfig(_Strict):
    """The annealed Langevin base drift of MCD, CMCD and DBS (paper §1).

    a_n = beta_n grad log pi + (1 - beta_n) grad log p_phi with 0 = beta_0 <= ... <= beta_N = 1.
    """

    learn_betas: bool = Field(True, description="False: betas stay linear in n")
    score_clip: float | None = Field(
        None,
        gt=0,
        description="clip grad log pi (drift and network input) to this norm times sqrt(d); "
        "none: no clipping",
    )
    differentiate_score: bool = Field(
        True,
        description="gradients through grad log pi in the drift (Hessian-vector products); "
        "False treats it as a constant: cheaper, but not the ELBO's gradient",
    )
    dbs_base_drift: Literal["annealed", "zero", "target"] = Field(
        "annealed", description="DBS only: the annealed drift, none, or grad log pi"
    )


class OptimConfig(_Strict):
    """Adam with separate learning rates, gradient clipping, NaN gradients zeroed."""

    lr_network: float = Field(5e-4, gt=0, description="learning rate of the control network")
    lr_prior: float = Field(1e-2, gt=0, description="learning rate of the prior's means, scales")
    lr_time: float = Field(
        1e-2, gt=0, description="learning rate of step sizes, friction and drift betas"
    )
    grad_clip: float | None = Field(1.0, gt=0, description="none: no clipping")
    grad_clip_mode: Literal["norm", "value"] = Field(
        "norm",
        description="norm: scale all gradients to total norm <= grad_clip; value: clip each "
        "element to [-grad_clip, grad_clip] (the authors' optax.clip)",
    )


class MalaConfig(_Strict):
    """Batched MALA used for IMR candidates."""

    n_chains: int = Field(64, ge=1, description="MALA chains per work item (component)")
    n_steps: int = Field(200, ge=1, description="MALA steps per chain")
    step_size: float = Field(0.1, gt=0, description="initial step size h: x + h grad + sqrt(2h) xi")
    target_accept: float = Field(
        0.574, gt=0, lt=1, description="acceptance rate the step size adapts to"
    )
    adapt_fraction: float = Field(
        0.5, ge=0, lt=1, description="leading share of n_steps that adapts the step size"
    )
    per_chain: bool = Field(False, description="adapt one step size per chain, not one shared")
    burn_in_steps: int = Field(
        0,
        ge=0,
        description="unadjusted Langevin steps before MALA, for chains that start far from any "
        "mode; each step's drift is capped at burn_in_max_move",
    )
    burn_in_step_size: float | None = Field(
        None, gt=0, description="burn-in step size h; none: step_size"
    )
    burn_in_max_move: float = Field(
        5.0, gt=0, description="longest drift h * |grad log rho| of one burn-in step"
    )
    ascent_steps: int = Field(
        0,
        ge=0,
        description="gradient-ascent steps after MALA that move each candidate to the top of "
        "its basin, so that candidates stand for modes (a heavy-tailed mode's far samples no "
        "longer look uncovered); for targets with separated modes, not for funnels",
    )


class IMRConfig(_Strict):
    """Iterative Model Refinement: add a component every `interval` iterations up to k_max."""

    enabled: bool = Field(False, description="run IMR (start with prior.k_init components)")
    interval: int = Field(1000, ge=1, description="iterations between added components")
    new_std: Literal["init", "mean_active", "laplace"] = Field(
        "init",
        description=(
            "scale of a new component: PriorConfig.init_std, the mean scale of the active "
            "components, or per dimension the target's Laplace scale at the new mean, "
            "(-d2 log rho / dx_i2)^(-1/2), falling back to init_std where that curvature is not "
            "negative"
        ),
    )
    chain_starts: Literal["component", "samples", "support"] = Field(
        "component",
        description="where a work item's MALA chains start: draws of its component, the "
        "sampler's samples that its component explains best, or draws from a region covering "
        "the target (the paper's choice, which reaches modes far from the prior)",
    )
    support: SupportRegion | None = Field(
        None,
        description="support starts: {shape: box | gaussian, scale, center}; none: the "
        "target's own region (targets.Target.support)",
    )
    selection: Literal["ratio", "capped"] = Field(
        "ratio",
        description="candidate score: log rho - log p_phi ('ratio'), or log rho - max(log p_phi, "
        "max over candidates of log p_phi - tau) ('capped': target density decides among "
        "candidates the prior misses)",
    )
    tau: float = Field(10.0, gt=0, description="the cap of selection 'capped', in nats")
    mala: MalaConfig = Field(default_factory=MalaConfig, description="the candidate search")


class AnnealingConfig(_Strict):
    """Training on pi^(1/T) with T falling to 1 (trainers/annealing.py); evaluation is at T = 1."""

    schedule: Literal["none", "linear", "geometric", "adaptive"] = Field(
        "none", description="how T falls to 1; none: no annealing"
    )
    t0: float = Field(10.0, ge=1, description="initial temperature")
    fraction: float = Field(
        0.5, ge=0, le=1, description="share of `iterations` until T = 1 (adaptive: at the latest)"
    )
    iterations: int | None = Field(
        None, ge=1, description="total training iterations of the run (a study: its budget)"
    )
    threshold: float = Field(
        0.1, gt=0, le=1, description="adaptive: mean normalised training ESS that lets T fall"
    )
    factor: float = Field(0.8, gt=0, lt=1, description="adaptive: T <- max(1, factor T)")
    window: int = Field(10, ge=1, description="adaptive: iterations per ESS window")

    @model_validator(mode="after")
    def _length_known(self) -> AnnealingConfig:
        if self.schedule in ("linear", "geometric") and self.iterations is None:
            raise ValueError(
                f"annealing.iterations (the run's total training iterations) is required by "
                f"schedule {self.schedule!r}"
            )
        return self


class TrainerConfig(_Strict):
    """Everything a `Trainer` needs: target, sampler, prior, time, networks, drift, optimiser, IMR.

    `drift` configures the annealed base drift of MCD, CMCD and DBS; DIS ignores it.
    """

    target: TargetSpec = Field(default_factory=TargetSpec, description="the target")
    sampler: SamplerName = Field("dis", description="the diffusion sampler")
    loss: Literal["rkl", "logvar"] = Field(
        "rkl", description="rkl: the negative ELBO; logvar: the variance of log w"
    )
    batch_size: int = Field(2000, ge=1, description="trajectories per training iteration")
    eval_samples: int = Field(2000, ge=1, description="samples per evaluation (metrics)")
    seed: int = Field(0, description="seed of initialisation, training and evaluation")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "cpu", description="auto: CUDA when present (a study's trial: CUDA when it holds a GPU)"
    )
    dtype: Literal["float32", "float64"] = Field("float32", description="floating-point type")
    compile: bool = Field(False, description="torch.compile the integrator step")
    checkpoint_steps: bool = Field(
        False, description="recompute each integrator step in the backward pass (saves memory)"
    )
    prior: PriorConfig = Field(default_factory=PriorConfig, description="the mixture prior")
    time: TimeConfig = Field(default_factory=TimeConfig, description="time discretisation")
    network: NetworkConfig = Field(default_factory=NetworkConfig, description="control network")
    drift: DriftConfig = Field(default_factory=DriftConfig, description="MCD/CMCD/DBS base drift")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="the optimiser")
    imr: IMRConfig = Field(default_factory=IMRConfig, description="Iterative Model Refinement")
    annealing: AnnealingConfig = Field(
        default_factory=AnnealingConfig, description="target annealing"
    )

    @property
    def initial_components(self) -> int:
        """Components active at the start: `prior.k_init`, else 1 with IMR and k_max without."""
        if self.prior.k_init is not None:
            return self.prior.k_init
        return 1 if self.imr.enabled else self.prior.k_max
