"""Typed configuration of an image flow target: flow, classifier, preprocessing and training."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    """Base model: unknown keys are errors; instances are immutable (they key the cache)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NiceArch(_Strict):
    """NICE: additive coupling layers with MLP shifts, a diagonal scaling, an iid base."""

    n_couplings: int = Field(6, ge=1)
    hidden: int = Field(128, ge=1, description="width of every hidden layer of a coupling MLP")
    depth: int = Field(2, ge=1, description="hidden layers per coupling MLP")
    base: Literal["gaussian", "logistic"] = "gaussian"


class ClassifierArch(_Strict):
    """The MLP that assigns an image to its class (the target's modes)."""

    hidden: int = Field(256, ge=1)
    depth: int = Field(2, ge=1, description="hidden layers")


class FitConfig(_Strict):
    """Adam on minibatches drawn with replacement, cosine learning-rate decay to zero."""

    steps: int = Field(2000, ge=1)
    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)


class Dequantisation(_Strict):
    """Pixel preprocessing: quantise to `levels` grey levels, add uniform noise, logit.

    An intensity v in [0, max_value] becomes q = floor(v * levels / (max_value + 1)), then
    u = (q + U(0, 1)) / levels in (0, 1) and y = logit(alpha + (1 - 2 alpha) u). The target
    density lives in y space. `levels` None keeps the native max_value + 1 levels.
    """

    levels: int | None = Field(None, ge=2)
    alpha: float = Field(0.05, gt=0, lt=0.5)


class ImageFlowConfig(_Strict):
    """Everything that determines a trained image flow target (and hence its cache key).

    The defaults are the recipe of the `digits` target, chosen by held-out likelihood.
    """

    seed: int = 0
    test_fraction: float = Field(0.2, gt=0, lt=1)
    dequantisation: Dequantisation = Field(default_factory=Dequantisation)
    flow: NiceArch = Field(default_factory=NiceArch)
    flow_fit: FitConfig = Field(default_factory=lambda: FitConfig(weight_decay=3e-4))
    classifier: ClassifierArch = Field(default_factory=ClassifierArch)
    classifier_fit: FitConfig = Field(default_factory=lambda: FitConfig(steps=1500))
