"""Training of an image flow target: a NICE flow by maximum likelihood and a class-label MLP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from targets.flows.config import FitConfig, ImageFlowConfig
from targets.flows.images import ImageSet, checkerboard_order, dequantise
from targets.flows.mlp import Params
from targets.flows.nice import Classifier, Nice

_EVAL_CHUNK = 5000

Loss = Callable[[Params, Tensor, Tensor], Tensor]
"""loss(params, preprocessed images, labels) -> scalar."""


def models_for(data: ImageSet, config: ImageFlowConfig) -> tuple[Nice, Classifier]:
    """The flow and classifier shapes for images of `data` under `config`."""
    dim = data.images.shape[1]
    return Nice(config.flow, dim), Classifier(config.classifier, dim, data.n_classes)


def split_indices(n_images: int, config: ImageFlowConfig) -> tuple[Tensor, Tensor]:
    """Seeded (train, held-out) indices of `n_images` images under `config`."""
    order = torch.randperm(n_images, generator=torch.Generator().manual_seed(config.seed))
    n_test = max(1, round(config.test_fraction * n_images))
    return order[n_test:], order[:n_test]


def train_image_flow(
    data: ImageSet, config: ImageFlowConfig, device: str | torch.device = "cpu"
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Train the flow and the classifier on the training part of `split_indices`.

    Returns their parameters (flow under "flow.", classifier under "classifier.", float32 on the
    CPU) and a report: per-dimension negative log-likelihoods of the flow on the training and
    held-out images, the classifier's held-out accuracy, and the training time.
    """
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    pixels, labels = torch.from_numpy(data.images), torch.from_numpy(data.labels).long()
    train, test = split_indices(len(pixels), config)
    flow, classifier = models_for(data, config)

    def prepare(idx: Tensor) -> tuple[Tensor, Tensor]:
        x = dequantise(pixels[idx], data.max_value, config.dequantisation, gen)
        return x.to(device), labels[idx].to(device)

    def nll(params: Params, x: Tensor, _: Tensor) -> Tensor:
        return -flow.log_prob(params, x).mean() / flow.dim

    def cross_entropy(params: Params, x: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(classifier.logits(params, x), y)

    flow_params = flow.init(checkerboard_order(data.shape), gen)
    _fit(flow_params, nll, train, prepare, config.flow_fit, gen, device)
    clf_params = classifier.init(gen)
    _fit(clf_params, cross_entropy, train, prepare, config.classifier_fit, gen, device)

    def evaluate(idx: Tensor) -> tuple[float, float]:
        """Mean flow NLL per dimension and classifier accuracy over `idx`, in chunks."""
        nll_sum, correct = 0.0, 0
        with torch.no_grad():
            for chunk in idx.split(_EVAL_CHUNK):
                x, y = prepare(chunk)
                nll_sum += nll(flow_params, x, y).item() * len(chunk)
                correct += (classifier.logits(clf_params, x).argmax(-1) == y).sum().item()
        return nll_sum / len(idx), correct / len(idx)

    (train_nll, _), (test_nll, test_accuracy) = evaluate(train), evaluate(test)
    report = {
        "flow_train_nll_per_dim": train_nll,
        "flow_test_nll_per_dim": test_nll,
        "classifier_test_accuracy": test_accuracy,
        "n_train": len(train),
        "n_test": len(test),
        "seconds": time.perf_counter() - start,
    }
    tensors = {f"flow.{k}": v for k, v in flow_params.items()}
    tensors |= {f"classifier.{k}": v for k, v in clf_params.items()}
    return {k: v.detach().cpu() for k, v in tensors.items()}, report


def _fit(
    params: dict[str, Tensor],
    loss: Loss,
    train: Tensor,
    prepare: Callable[[Tensor], tuple[Tensor, Tensor]],
    fit: FitConfig,
    generator: torch.Generator,
    device: str | torch.device,
) -> None:
    """Adam with cosine decay on minibatches of `train` (indices); updates `params` in place."""
    for name, value in params.items():
        params[name] = value.to(device)
    trainable = [v.requires_grad_(True) for v in params.values() if v.is_floating_point()]
    optimiser = torch.optim.Adam(trainable, lr=fit.lr, weight_decay=fit.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=fit.steps)
    for _ in range(fit.steps):
        batch = train[torch.randint(len(train), (fit.batch_size,), generator=generator)]
        optimiser.zero_grad(set_to_none=True)
        loss(params, *prepare(batch)).backward()
        optimiser.step()
        schedule.step()
    for value in trainable:
        value.requires_grad_(False)
