"""IMR's per-component MALA candidate generation as Ray tasks (the trainers' executor hook)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

import ray

from orchestrator.threads import use_threads


def _run_in_task(fn: Callable[[Any], Any], item: Any, cpus: float) -> tuple[Any, dict[str, Any]]:
    use_threads(cpus)
    result = fn(item)
    context = ray.get_runtime_context()
    return result, {"task_id": context.get_task_id(), "pid": os.getpid()}


class RayTaskExecutor:
    """`executor(fn, items)`: every work item runs as its own Ray task; results in item order.

    Tasks started from inside a Tune trial land in the trial's placement group (Tune captures
    child tasks), so `num_cpus` must fit the bundles the trial reserved for them. `tasks`
    records the Ray task id and process of every task run, as evidence of where work ran.
    """

    def __init__(self, num_cpus: float = 1.0) -> None:
        self.num_cpus = num_cpus
        self.tasks: list[dict[str, Any]] = []
        self._remote = ray.remote(num_cpus=num_cpus, max_retries=2)(_run_in_task)

    def __call__(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
        refs = [self._remote.remote(fn, item, self.num_cpus) for item in items]
        outputs = ray.get(refs)
        self.tasks.extend(info for _, info in outputs)
        return [result for result, _ in outputs]
