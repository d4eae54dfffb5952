"""The `Trainer`: model, optimiser, IMR, evaluation and an exact, resumable state."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

import targets
from targets.base import Target
from trainers.annealing import Annealing, tempered
from trainers.config import TrainerConfig
from trainers.counting import CountingTarget
from trainers.imr import imr_due, propose_component
from trainers.metrics import (
    ELBO,
    ESS,
    IMR_TARGET_EVALS,
    N_ACTIVE,
    SIGMA2,
    TARGET_EVALS,
    TIME_HORIZON,
    evaluate_samples,
)
from trainers.prior import GaussianMixturePrior
from trainers.samplers import Sampler, build_sampler

Executor = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]

TENSORS_FILE = "model.safetensors"
META_FILE = "config.json"
STATE_FORMAT = 1

# Independent random streams derived from the seed (keys of `derive_seed`).
_INIT, _TRAIN, _EVAL, _METRICS, _IMR = range(5)


def derive_seed(seed: int, *keys: int) -> int:
    """A 64-bit seed for the stream named by `keys`, independent of the other streams."""
    return int(np.random.SeedSequence(seed, spawn_key=keys).generate_state(1, np.uint64)[0])


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA if available else CPU; otherwise the named device."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _learning_rate_key(name: str) -> str:
    """The `OptimConfig` learning rate that trains sampler parameter `name`.

    The betas of the annealed drift go with the time discretisation (lr_time).
    """
    if name.startswith("prior."):
        return "lr_prior"
    if name.startswith(("schedule.", "betas.")):
        return "lr_time"
    return "lr_network"


@dataclass(frozen=True)
class EvalResult:
    """An evaluation: metrics, the samples, their log weights and each one's prior component."""

    metrics: dict[str, float]
    samples: Tensor
    log_weights: Tensor
    components: Tensor


class Trainer:
    """Trains one sampler configuration on one target, deterministically for a seed.

    `executor` (a `map`-like callable) runs IMR's per-component work items; the orchestrator
    passes Ray tasks, the default runs them in-process. `threads` CPU threads share every
    rollout, each integrating a block of the batch's rows (`Sampler.rollout`): results are the
    same for any count up to floating-point rounding, and bitwise the same for the same count.
    """

    def __init__(
        self,
        config: TrainerConfig,
        target: Target | None = None,
        executor: Executor = map,
        *,
        threads: int = 1,
    ) -> None:
        self.config = config
        self.executor = executor
        self.threads = threads
        self.device = resolve_device(config.device)
        self.dtype = getattr(torch, config.dtype)
        if target is None:
            target = targets.make(config.target.name, **config.target.kwargs)
        self.target = target.to(self.device)
        init = torch.Generator().manual_seed(derive_seed(config.seed, _INIT))
        p = config.prior
        self.prior = GaussianMixturePrior(
            p.k_max,
            target.dim,
            config.initial_components,
            p.init_std,
            p.init_mean_std,
            p.learn,
            init,
        )
        self.counted_target = CountingTarget(self.target)  # what training evaluates
        self.sampler: Sampler = build_sampler(config, self.prior, self.counted_target, init)
        self.sampler.to(device=self.device, dtype=self.dtype)
        self.optimizer = self._build_optimizer()
        self.generator = torch.Generator(self.device)
        self.generator.manual_seed(derive_seed(config.seed, _TRAIN))
        self.iteration = 0
        self.annealing = Annealing(config.annealing)
        self.imr_events: list[dict[str, Any]] = []
        self.imr_target_evals = 0
        self.history: dict[str, list[float]] = {
            "loss": [],
            ELBO: [],
            "grad_norm": [],
            "temperature": [],
        }

    def _build_optimizer(self) -> torch.optim.Adam:
        lrs = self.config.optim.model_dump()
        groups: dict[str, list[torch.nn.Parameter]] = {}
        for name, param in self.sampler.named_parameters():
            if param.requires_grad:
                groups.setdefault(_learning_rate_key(name), []).append(param)
        return torch.optim.Adam(
            [{"params": params, "lr": lrs[lr]} for lr, params in groups.items()]
        )

    def _parameters(self) -> list[torch.nn.Parameter]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # Training.
    def train(self, n_iters: int) -> dict[str, float]:
        """Run `n_iters` iterations; metrics of the last one and the iteration rate."""
        start = time.perf_counter()
        metrics: dict[str, float] = {}
        for _ in range(n_iters):
            metrics = self._iterate()
        elapsed = time.perf_counter() - start
        metrics["iterations_per_s"] = n_iters / elapsed if elapsed > 0 else math.nan
        return {**metrics, **self._model_metrics()}

    def _iterate(self) -> dict[str, float]:
        """One training step; its `elbo`, `log_z` and `ess` are at its `temperature`."""
        temperature = self.annealing.temperature(self.iteration)
        with tempered(self.sampler, temperature):  # backward too: it may read the target
            loss, stats = self.sampler.loss_and_gradients(
                self.config.batch_size, self.generator, self.threads
            )
        grad_norm = self._clean_and_clip_gradients()
        self.optimizer.step()
        self.iteration += 1
        self.annealing.observe(stats[ESS])
        metrics = {
            "loss": float(loss.detach()),
            **stats,
            "grad_norm": grad_norm,
            "temperature": temperature,
        }
        for key, values in self.history.items():
            values.append(metrics[key])
        cfg = self.config
        if imr_due(self.iteration, cfg.imr, self.prior.n_active, cfg.prior.k_max):
            self._refine()
        return metrics

    def _clean_and_clip_gradients(self) -> float:
        """Zero NaN gradient entries, clip by norm or by value; the norm before clipping."""
        parameters = self._parameters()
        for param in parameters:
            if param.grad is not None:
                param.grad.masked_fill_(param.grad.isnan(), 0.0)
        optim = self.config.optim
        if optim.grad_clip_mode == "norm":
            return float(torch.nn.utils.clip_grad_norm_(parameters, optim.grad_clip or math.inf))
        norm = float(torch.nn.utils.clip_grad_norm_(parameters, math.inf))
        if optim.grad_clip is not None:
            torch.nn.utils.clip_grad_value_(parameters, optim.grad_clip)
        return norm

    def _refine(self) -> None:
        """Add one mixture component where IMR proposes it; reset its Adam moments."""
        seed = derive_seed(self.config.seed, _IMR, self.iteration)
        imr = self.config.imr
        with torch.no_grad():
            samples = None
            if imr.chain_starts == "samples":  # the rollout's evaluations are IMR's
                generator = self._stream(_IMR, self.device)
                with self.counted_target.uncounted() as counted:
                    samples = self.sampler.rollout(
                        self.config.batch_size, generator, threads=self.threads
                    ).x
                self.imr_target_evals += counted.set_aside
            proposal = propose_component(
                self.prior,
                self.target,
                imr,
                self.executor,
                seed,
                samples,
                init_std=self.config.prior.init_std,
            )
        self.imr_target_evals += proposal.record["target_evals"]
        slot = self.prior.activate(proposal.mean, proposal.scale)
        for param in (self.prior.means, self.prior.raw_scales):
            state = self.optimizer.state.get(param, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][slot] = 0.0
        self.imr_events.append(
            {
                "iteration": self.iteration,
                "slot": slot,
                "n_work_items": proposal.n_work_items,
                **proposal.record,
            }
        )

    def _model_metrics(self) -> dict[str, float]:
        schedule = self.sampler.schedule
        with torch.no_grad():
            return {
                TIME_HORIZON: float(schedule.horizon()),
                SIGMA2: float(schedule.sigma2().mean()),
                N_ACTIVE: float(self.prior.n_active),
                TARGET_EVALS: float(self.counted_target.evaluations),
                IMR_TARGET_EVALS: float(self.imr_target_evals),
            }

    # Evaluation and sampling.
    def _stream(self, key: int, device: torch.device | str) -> torch.Generator:
        """A generator for stream `key` at the current iteration (leaves training RNG alone)."""
        generator = torch.Generator(device)
        generator.manual_seed(derive_seed(self.config.seed, key, self.iteration))
        return generator

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """`n` samples [n, d] and log weights [n] (a fresh stream per iteration by default)."""
        return self.sampler.sample(
            n, generator or self._stream(_EVAL, self.device), threads=self.threads
        )

    def evaluate(self, n_samples: int | None = None) -> EvalResult:
        """Metrics of `n_samples` (default `config.eval_samples`) fresh samples."""
        n = n_samples or self.config.eval_samples
        with torch.no_grad(), self.counted_target.uncounted():  # evaluation is not training
            rollout = self.sampler.rollout(
                n, self._stream(_EVAL, self.device), threads=self.threads
            )
        metrics = evaluate_samples(
            rollout.log_weights, rollout.x, self.target, generator=self._stream(_METRICS, "cpu")
        )
        metrics.update(self._model_metrics())
        return EvalResult(metrics, rollout.x, rollout.log_weights, rollout.components)

    # State.
    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Everything needed to resume exactly: tensors (CPU copies) and JSON-able metadata."""
        tensors = {f"model/{k}": v for k, v in self.sampler.state_dict().items()}
        names = {param: name for name, param in self.sampler.named_parameters()}
        for param, state in self.optimizer.state.items():
            for key, value in state.items():
                tensors[f"optim/{names[param]}/{key}"] = value
        tensors["rng/train"] = self.generator.get_state()
        tensors["iteration"] = torch.tensor(self.iteration)
        tensors = {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}
        meta = {
            "format": STATE_FORMAT,
            "config": self.config.model_dump(mode="json"),
            "imr_events": json.loads(json.dumps(self.imr_events)),
            "history": {k: list(v) for k, v in self.history.items()},
            "annealing": self.annealing.state(),
            "target_evals": {
                "train": self.counted_target.evaluations,
                "imr": self.imr_target_evals,
            },
        }
        return tensors, meta

    @classmethod
    def from_state(
        cls,
        tensors: dict[str, Tensor],
        meta: dict[str, Any],
        target: Target | None = None,
        executor: Executor = map,
    ) -> Trainer:
        """The trainer that `state()` described, ready to continue bitwise as it would have."""
        trainer = cls(TrainerConfig.model_validate(meta["config"]), target, executor)
        trainer._restore(tensors, meta)
        return trainer

    def _restore(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        model = {k.removeprefix("model/"): v for k, v in tensors.items() if k.startswith("model/")}
        self.sampler.load_state_dict(model)
        names = {param: name for name, param in self.sampler.named_parameters()}
        optim_state = self.optimizer.state_dict()
        for group, saved_group in zip(
            self.optimizer.param_groups, optim_state["param_groups"], strict=True
        ):
            for param, index in zip(group["params"], saved_group["params"], strict=True):
                prefix = f"optim/{names[param]}/"
                entry = {
                    k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)
                }
                if entry:
                    optim_state["state"][index] = entry
        self.optimizer.load_state_dict(optim_state)
        if "rng/train" in tensors:  # absent from exports (a sampler, not a training run)
            self.generator.set_state(tensors["rng/train"])
        self.iteration = int(tensors["iteration"])
        self.imr_events = list(meta.get("imr_events", []))
        self.history = {k: list(v) for k, v in meta.get("history", self.history).items()}
        if "annealing" in meta:
            self.annealing.load_state(meta["annealing"])
        counts = meta.get("target_evals", {})
        self.counted_target.evaluations = int(counts.get("train", 0))
        self.imr_target_evals = int(counts.get("imr", 0))

    def save(self, path: str | Path) -> Path:
        """Write `state()` into directory `path` (safetensors + JSON, no pickle)."""
        return write_state(path, *self.state())

    @classmethod
    def load(
        cls, path: str | Path, target: Target | None = None, executor: Executor = map
    ) -> Trainer:
        """The trainer saved by `save(path)` (a checkpoint) or by `gmp export` (a sampler)."""
        return cls.from_state(*read_state(path), target, executor)


def write_state(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write tensors (safetensors) and metadata (JSON) into directory `path`; no pickle."""
    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, directory / TENSORS_FILE
    )
    (directory / META_FILE).write_text(json.dumps(meta, indent=1))
    return directory


def read_state(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and metadata in directory `path`; `FileNotFoundError` naming a missing file."""
    directory = Path(path)
    for name in (TENSORS_FILE, META_FILE):
        if not (directory / name).is_file():
            raise FileNotFoundError(f"{directory / name}: no such file (not a gmp model folder)")
    return load_file(directory / TENSORS_FILE), json.loads((directory / META_FILE).read_text())


def load(path: str | Path, target: Target | None = None, executor: Executor = map) -> Trainer:
    """A trainer from a folder written by `Trainer.save` or `gmp export`; `.sample(n)` draws."""
    return Trainer.load(path, target, executor)
