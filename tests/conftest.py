"""Test-wide settings: data from the shared folder when GMP_DATA_DIR is not set."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "GMP_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["GMP_DATA_DIR"] = str(_SHARED_DATA)

# One torch thread per test process: on a 2-core machine shared with Ray workers and other
# processes, two threads per process slow everything down by an order of magnitude.
torch.set_num_threads(1)


@pytest.fixture
def fresh_imports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """The test's folder for user target modules: the import path, and the modules imported
    from that folder, are as before once the test ends."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(tmp_path)):
            del sys.modules[name]
