"""A trainer's state on disk: `trainer.safetensors` (tensors) + `trainer.json` (config, history)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import Tensor

TENSORS_FILE = "trainer.safetensors"
META_FILE = "trainer.json"


def write_state(directory: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write a trainer state (as given by `Trainer.state()`) into `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in tensors.items()}, directory / TENSORS_FILE
    )
    (directory / META_FILE).write_text(json.dumps(meta, indent=1, default=_jsonable))
    return directory


def read_state(directory: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a trainer state written by `write_state` (no unpickling)."""
    directory = Path(directory)
    return load_file(directory / TENSORS_FILE), json.loads((directory / META_FILE).read_text())


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
