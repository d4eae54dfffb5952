"""An exported sampler as an MLflow pyfunc, logged as code ("models from code"): no pickle.

MLflow runs this file when it logs or loads the model; the export folder is the model's one
artifact and `trainers.load` rebuilds the sampler from it (safetensors + JSON). `predict` takes
a DataFrame (or a mapping such as {"n": 100}) with a column `n`, the number of samples to draw
(one request per row), and an optional column `seed`; it returns a DataFrame with columns
`request` (the input row), x0..x{d-1} and `log_weight` (the samples' log importance weights).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel, PythonModelContext

import trainers


class SamplerModel(PythonModel):
    """Draws samples and log importance weights from an exported diffusion sampler."""

    def load_context(self, context: PythonModelContext) -> None:
        """Rebuild the sampler from the export folder, the model's one artifact."""
        (folder,) = context.artifacts.values()
        self.trainer = trainers.load(folder)

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Samples for each request: `n` draws, seeded by `seed` when given (else fresh)."""
        frames = []
        for row, (n, seed) in enumerate(requests(model_input)):
            generator = torch.Generator(self.trainer.device)
            if seed is None:
                generator.seed()
            else:
                generator.manual_seed(seed)
            x, log_w = self.trainer.sample(n, generator)
            frame = pd.DataFrame(
                x.double().cpu().numpy(), columns=[f"x{i}" for i in range(x.shape[1])]
            )
            frame.insert(0, "request", row)
            frame["log_weight"] = log_w.double().cpu().numpy()
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


def requests(frame: pd.DataFrame) -> list[tuple[int, int | None]]:
    """(n, seed) per row of a DataFrame with a column `n` and an optional column `seed`."""
    if "n" not in frame.columns or frame.empty:
        raise ValueError("predict input needs a column 'n' (samples to draw) with at least a row")
    seeds = frame["seed"] if "seed" in frame.columns else [None] * len(frame)
    found = []
    for n, seed in zip(frame["n"], seeds, strict=True):
        if not float(n).is_integer() or n < 1:
            raise ValueError(f"predict input 'n' must be a positive integer, got {n!r}")
        found.append((int(n), None if seed is None or pd.isna(seed) else int(seed)))
    return found


mlflow.models.set_model(SamplerModel())
