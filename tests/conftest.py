"""Test-wide settings: data from the shared folder when GMP_DATA_DIR is not set."""

import os
from pathlib import Path

import torch

_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "GMP_DATA_DIR" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["GMP_DATA_DIR"] = str(_SHARED_DATA)

# One torch thread per test process: on a 2-core machine shared with Ray workers and other
# processes, two threads per process slow everything down by an order of magnitude.
torch.set_num_threads(1)
