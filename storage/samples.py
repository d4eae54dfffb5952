"""Sample sets as Parquet: one row per sample, columns x0..x{d-1}, log_weight, component."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def write_samples(
    path: str | Path, samples: np.ndarray, log_weights: np.ndarray, components: np.ndarray
) -> Path:
    """Write samples [M, d], their log importance weights [M] and prior components [M]."""
    samples = np.asarray(samples)
    if samples.ndim != 2 or len(samples) != len(log_weights) or len(samples) != len(components):
        raise ValueError(
            f"samples {samples.shape}, log_weights {np.shape(log_weights)} and components "
            f"{np.shape(components)} must describe the same M samples"
        )
    columns = {f"x{i}": pa.array(samples[:, i]) for i in range(samples.shape[1])}
    columns["log_weight"] = pa.array(np.asarray(log_weights, dtype=np.float64))
    columns["component"] = pa.array(np.asarray(components, dtype=np.int32))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def read_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read back (samples [M, d], log_weights [M], components [M])."""
    table = pq.read_table(path)
    names = [n for n in table.column_names if n.startswith("x")]
    names.sort(key=lambda n: int(n[1:]))
    samples = np.stack([table.column(n).to_numpy() for n in names], axis=1)
    return (
        samples,
        table.column("log_weight").to_numpy(),
        table.column("component").to_numpy(),
    )


def sample_summary(
    samples: np.ndarray, log_weights: np.ndarray, components: np.ndarray
) -> dict[str, object]:
    """A small, readable account of a sample set (for a preview beside its Parquet file): its
    size, each coordinate's mean and standard deviation, the log weights' range and the
    number of samples drawn from each prior component."""
    values, counts = np.unique(components, return_counts=True)
    return {
        "samples": int(samples.shape[0]),
        "dim": int(samples.shape[1]),
        "mean": [round(float(v), 6) for v in samples.mean(axis=0)],
        "std": [round(float(v), 6) for v in samples.std(axis=0)],
        "log_weight": {
            "mean": float(log_weights.mean()),
            "min": float(log_weights.min()),
            "max": float(log_weights.max()),
        },
        "per_component": {str(int(k)): int(n) for k, n in zip(values, counts, strict=True)},
    }
