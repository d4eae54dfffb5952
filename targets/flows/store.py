"""A per-user cache of trained target models (safetensors + JSON), keyed by their recipe's hash."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

from targets.data import CACHE_DIR_ENV, cache_dir

_TENSORS, _META = "model.safetensors", "meta.json"


@dataclass(frozen=True)
class StoredModel:
    """A trained model as read from the cache: named tensors, its recipe and training report."""

    tensors: dict[str, Tensor]
    recipe: dict[str, Any]
    report: dict[str, Any]
    path: Path


def model_cache_dir() -> Path:
    """Folder of trained models: `$GMP_CACHE_DIR/models`, else `~/.cache/gmp/models`."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]) / "models"
    return cache_dir().parent / "models"


def recipe_key(recipe: Mapping[str, Any]) -> str:
    """Short hash of a JSON-serialisable recipe (everything that determines the model)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def load_or_build(
    name: str,
    recipe: Mapping[str, Any],
    build: Callable[[], tuple[dict[str, Tensor], dict[str, Any]]],
) -> StoredModel:
    """The cached model `name` made by `recipe`; on a miss, `build()` it and cache it first.

    `build` returns the model's tensors and a JSON-serialisable training report.
    """
    folder = model_cache_dir() / f"{name}-{recipe_key(recipe)}"
    if not (folder / _META).is_file():
        tensors, report = build()
        _write(folder, tensors, {"recipe": dict(recipe), "report": report})
    meta = json.loads((folder / _META).read_text())
    return StoredModel(load_file(folder / _TENSORS), meta["recipe"], meta["report"], folder)


def _write(folder: Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write into a fresh folder beside `folder`, then rename it into place (atomic)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp / _TENSORS)
        (tmp / _META).write_text(json.dumps(meta, indent=2, sort_keys=True))
        tmp.rename(folder)
    except OSError:
        if not (folder / _META).is_file():  # not another process finishing first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
