"""PNG plots of a trial: samples over the target (coloured by prior component), training curves."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_samples(
    path: str | Path,
    samples: np.ndarray,
    components: np.ndarray,
    log_density: Callable[[np.ndarray], np.ndarray] | None = None,
    title: str = "",
    max_points: int = 2000,
) -> Path:
    """Samples of the first two coordinates coloured by component, over the density if d = 2."""
    samples, components = samples[:max_points], components[:max_points]
    fig = Figure(figsize=(6, 5.5))
    ax = fig.subplots()
    if samples.shape[1] == 2 and log_density is not None:
        lo, hi = samples.min(0), samples.max(0)
        pad = 0.15 * (hi - lo) + 1e-3
        xs = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 200)
        ys = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 200)
        gx, gy = np.meshgrid(xs, ys)
        values = log_density(np.stack([gx.ravel(), gy.ravel()], 1)).reshape(gx.shape)
        ax.contourf(gx, gy, np.exp(values - values.max()), levels=20, cmap="Greys")
    if samples.shape[1] >= 2:
        ax.scatter(samples[:, 0], samples[:, 1], c=components, cmap="tab10", s=4, alpha=0.6)
        ax.set_xlabel("x0")
        ax.set_ylabel("x1")
    else:
        for k in np.unique(components):
            ax.hist(samples[components == k, 0], bins=60, alpha=0.5, label=f"component {k}")
        ax.legend()
    ax.set_title(title or "samples coloured by prior component")
    return save_figure(fig, path)


def plot_curves(
    path: str | Path, history: Mapping[str, Sequence[tuple[int, float]]], title: str = ""
) -> Path:
    """One panel per metric: value against training iteration."""
    names = [n for n, points in history.items() if points]
    n_cols = min(3, max(1, len(names)))
    n_rows = max(1, -(-len(names) // n_cols))
    fig = Figure(figsize=(4 * n_cols, 3 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for ax, name in zip(axes.ravel(), names, strict=False):
        steps, values = zip(*history[name], strict=True)
        ax.plot(steps, values, marker=".")
        ax.set_title(name)
        ax.set_xlabel("iteration")
    for ax in axes.ravel()[len(names) :]:
        ax.axis("off")
    fig.suptitle(title or "training curves")
    return save_figure(fig, path)


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Lay out `fig` and write it as a PNG to `path` (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
