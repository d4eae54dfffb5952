"""Image targets: the exact density of a NICE flow trained on labelled images (digits, Fashion).

The density lives in the flow's logit space (see `targets.flows.config.Dequantisation`), is
normalised (log Z = 0) and has exact samples; a classifier trained on the same images assigns
every point to one of the classes, the target's modes. A trained model is cached per user under
`targets.flows.store.model_cache_dir()`, keyed by a hash of its data and configuration, so
only the first construction trains.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from targets.base import Target
from targets.flows.config import (
    ClassifierArch,
    Dequantisation,
    FitConfig,
    ImageFlowConfig,
    NiceArch,
)
from targets.flows.images import ImageSet, load_digits, load_fashion_mnist
from targets.flows.store import load_or_build
from targets.flows.training import models_for, train_image_flow
from targets.registry import register

RECIPE_FORMAT = 1
"""Bumped whenever a change of code changes what a given configuration trains."""

FASHION_CONFIG = ImageFlowConfig(
    test_fraction=1 / 12,
    dequantisation=Dequantisation(levels=8, alpha=0.05),
    flow=NiceArch(n_couplings=4, hidden=1000, depth=4),
    flow_fit=FitConfig(steps=20_000, batch_size=500, lr=3e-4),
    classifier=ClassifierArch(hidden=512, depth=2),
    classifier_fit=FitConfig(steps=3000, batch_size=500),
)
"""The `fashion` recipe: the NICE of the authors' code (4 couplings, 4 x 1000 hidden units,
Gaussian base, 3-bit pixels, logit with alpha 0.05). It wants a GPU (train_device="cuda")."""

ConfigLike = ImageFlowConfig | Mapping[str, Any] | None


class ImageFlowTarget(Target):
    """The exact log density of a trained NICE flow; `mode_of` is its classifier's label."""

    log_Z = 0.0
    has_samples = True

    def __init__(self, data: ImageSet, config: ImageFlowConfig, train_device: str) -> None:
        super().__init__()
        recipe = {
            "format": RECIPE_FORMAT,
            "data": data.name,
            "data_sha256": data.fingerprint(),
            "config": config.model_dump(mode="json"),
        }
        stored = load_or_build(
            data.name, recipe, lambda: train_image_flow(data, config, train_device)
        )
        self.flow, self.classifier = models_for(data, config)
        self.dim = self.flow.dim
        self.n_modes = data.n_classes
        self.image_shape = data.shape
        self.config = config
        self.report: dict[str, Any] = stored.report
        self.model_dir: Path = stored.path
        for key, value in stored.tensors.items():
            self.register_buffer(key, value)

    def model_params(self, model: str, like: Tensor) -> dict[str, Tensor]:
        """Parameters of `model` ("flow" or "classifier") in the dtype and device of `like`."""
        prefix = f"{model}."
        return {
            key[len(prefix) :]: self.buffer(key, like)
            for key in self._buffers
            if key.startswith(prefix)
        }

    def log_prob(self, x: Tensor) -> Tensor:
        return self.flow.log_prob(self.model_params("flow", x), x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        like = torch.empty(0, dtype=torch.float64)
        with torch.no_grad():
            return self.flow.sample(self.model_params("flow", like), n, generator)

    def mode_of(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.classifier.logits(self.model_params("classifier", x), x).argmax(-1)


def _config(config: ConfigLike, default: ImageFlowConfig) -> ImageFlowConfig:
    """`config` validated; a mapping overrides only the fields it names in `default`."""
    if config is None or isinstance(config, ImageFlowConfig):
        return config or default
    return ImageFlowConfig.model_validate(_merge(default.model_dump(), config))


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `update` applied recursively to nested mappings."""
    merged = dict(base)
    for key, value in update.items():
        nested = isinstance(value, Mapping) and isinstance(base.get(key), dict)
        merged[key] = _merge(base[key], value) if nested else value
    return merged


@register(
    "digits",
    dim="64",
    summary="NICE flow trained on scikit-learn's 8x8 digits; modes = 10 classes",
    log_Z=True,
    samples=True,
    modes=True,
)
class Digits(ImageFlowTarget):
    """A NICE flow trained on scikit-learn's 1797 8x8 digits (seeded, under a minute on a CPU)."""

    name = "digits"

    def __init__(self, config: ConfigLike = None, train_device: str = "cpu") -> None:
        super().__init__(load_digits(), _config(config, ImageFlowConfig()), train_device)


@register(
    "fashion",
    dim="784",
    summary="NICE flow trained on Fashion-MNIST (user-supplied files); modes = 10 classes",
    log_Z=True,
    samples=True,
    modes=True,
)
class Fashion(ImageFlowTarget):
    """A NICE flow trained on Fashion-MNIST read from `data_dir` (else GMP_DATA_DIR)."""

    name = "fashion"

    def __init__(
        self,
        data_dir: str | Path | None = None,
        config: ConfigLike = None,
        train_device: str = "cpu",
    ) -> None:
        data = load_fashion_mnist(data_dir)
        super().__init__(data, _config(config, FASHION_CONFIG), train_device)
