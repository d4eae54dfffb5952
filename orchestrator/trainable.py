"""A Tune class trainable wrapping a `Trainer`: one `step()` = one evaluation interval."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from orchestrator.spec import StudySpec
from orchestrator.tasks import RayTaskExecutor
from orchestrator.threads import training_threads
from storage.samples import write_samples
from trainers import Trainer
from trainers.metrics import ACTIVE_K, TRAIN_PREFIX

SAMPLES_FILE = "samples.parquet"
EVAL_FILE = "evaluation.json"
TASKS_FILE = "imr_tasks.json"


class TrialFailedError(RuntimeError):
    """Training produced a non-finite objective or loss; the message says which and when."""


class GMPTrainable(tune.Trainable):
    """Trains one sampler configuration; Tune's config holds the sampled search-space values."""

    def setup(self, config: dict[str, Any], spec_json: str) -> None:
        """Build the trainer from the study spec and this trial's sampled parameters."""
        logging.getLogger("ray.train").setLevel(logging.WARNING)  # one line per checkpoint
        self.spec = StudySpec.model_validate_json(spec_json)
        self.threads = training_threads(self.spec.resources.cpus)
        self.executor = RayTaskExecutor(self.spec.resources.imr_task_cpus)
        self._build(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Start another trial in this actor (Tune's actor reuse): a fresh trainer."""
        self.executor.tasks = []
        self._build(new_config)
        return True

    def _build(self, config: dict[str, Any]) -> None:
        params = {key: config[key] for key in self.spec.search_space}
        trainer_config = self.spec.trainer_config(params)
        device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        trainer_config = trainer_config.model_copy(update={"device": device})
        self.trainer = Trainer(trainer_config, executor=self.executor, threads=self.threads)
        self.last_eval = None
        self.restored_from = 0

    def step(self) -> dict[str, Any]:
        """Train one evaluation interval, evaluate, and report every metric."""
        budget = self.spec.budget
        n_iters = min(budget.eval_interval, budget.iterations - self.trainer.iteration)
        start, cpu_start = time.perf_counter(), time.process_time()
        train_metrics = self.trainer.train(n_iters)
        train_seconds = time.perf_counter() - start
        evaluation = self.trainer.evaluate()
        step_cpu_s = time.process_time() - cpu_start
        step_wall_s = time.perf_counter() - start
        self.last_eval = evaluation
        result: dict[str, Any] = {f"{TRAIN_PREFIX}{k}": v for k, v in train_metrics.items()}
        result.update(evaluation.metrics)
        result["iteration"] = self.trainer.iteration
        result["iterations_per_s"] = n_iters / max(train_seconds, 1e-9)
        result["step_wall_s"] = step_wall_s  # training and evaluation of this step
        result["step_cpu_s"] = step_cpu_s  # CPU time of the trial's process in this step
        result[ACTIVE_K] = self.trainer.prior.n_active
        result["imr_tasks"] = len(self.executor.tasks)
        result["restored_from_iteration"] = self.restored_from
        result["done"] = self.trainer.iteration >= budget.iterations
        if result.get("n_nonfinite", 0) > 0:
            raise TrialFailedError(
                f"{int(result['n_nonfinite'])} non-finite log weights at iteration "
                f"{self.trainer.iteration}"
            )
        for goal in self.spec.objective:
            value = result.get(goal.metric)
            if value is None or not math.isfinite(value):
                raise TrialFailedError(
                    f"objective {goal.metric} is {value} at iteration {self.trainer.iteration}"
                )
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """Trainer state (safetensors + JSON) and the latest evaluation's samples (Parquet)."""
        self.trainer.save(checkpoint_dir)
        (Path(checkpoint_dir) / TASKS_FILE).write_text(json.dumps(self.executor.tasks))
        if self.last_eval is not None:
            write_samples(
                Path(checkpoint_dir) / SAMPLES_FILE,
                self.last_eval.samples.cpu().numpy(),
                self.last_eval.log_weights.cpu().numpy(),
                self.last_eval.components.cpu().numpy(),
            )
            (Path(checkpoint_dir) / EVAL_FILE).write_text(json.dumps(self.last_eval.metrics))

    def load_checkpoint(self, checkpoint_dir: str) -> None:
        """Resume exactly where the checkpoint was taken."""
        self.executor.tasks = json.loads((Path(checkpoint_dir) / TASKS_FILE).read_text())
        self.trainer = Trainer.load(checkpoint_dir, executor=self.executor)
        self.trainer.threads = self.threads
        self.restored_from = self.trainer.iteration
