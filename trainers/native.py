"""The compiled integration step (native_step.cpp): built on first use, used where it pays.

Row-block threads (`Sampler.rollout(threads=...)`) run each step's operators from Python, and
Python lets one thread at a time run Python code: between two operators a thread may wait for
the other. The compiled step makes the prior's score, the control network's forward pass,
the integrator's arithmetic at a point and the draw of a step's noise one call each, run
without that lock. It calls the same operators in the same order as the Python code, so
trajectories, losses and gradients are bitwise the same with it or without it.

The same file holds the network's exact GELU for float32 on the CPU (`gelu`), which keeps its
slope from the forward pass for the backward pass. Its values and slopes differ from torch's
in the last bits (both approximate erf to within 1.5e-7), so it is used wherever gmp's compiled
code is, by the Python step too, and the results do not depend on which step ran.

`GMP_NATIVE` chooses: `auto` (default) uses the GELU for every CPU rollout and the compiled
step for CPU rollouts split over more than one thread, `1` both for every rollout, `0` neither
(torch's GELU, the Python step). The first use compiles it (C++ compiler and ninja needed,
about half a minute; torch keeps the build in `TORCH_EXTENSIONS_DIR`, by default
~/.cache/torch_extensions, for later processes). Where it cannot be built, gmp warns once and
runs the Python step with torch's GELU.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from torch.nn import functional as F

SOURCE = Path(__file__).with_name("native_step.cpp")
SETTINGS = ("auto", "1", "0")

_build_lock = threading.Lock()
_built: dict[str, ModuleType | None] = {}
_active = threading.local()


def setting() -> str:
    """`GMP_NATIVE` (auto, 1 or 0), checked."""
    value = os.environ.get("GMP_NATIVE", "auto").strip().lower()
    if value not in SETTINGS:
        raise ValueError(f"GMP_NATIVE must be one of {', '.join(SETTINGS)}, got {value!r}")
    return value


def wanted(device_type: str, row_blocks: int) -> bool:
    """Whether a rollout on `device_type` split into `row_blocks` blocks uses the compiled step."""
    choice = setting()
    return choice == "1" or (choice == "auto" and device_type == "cpu" and row_blocks > 1)


def gelu(x: Tensor, approximate: str, overwrite_input: bool = False) -> Tensor:
    """GELU of `x` as torch's `approximate` names it: the compiled exact GELU where `GMP_NATIVE`
    allows compiled code and it applies (float32 on the CPU, outside torch.compile), torch's
    otherwise. `overwrite_input`: nothing reads `x` (a computed tensor, not a leaf) after the
    call, and the compiled GELU may keep its backward pass's slope in x's memory."""
    if (
        approximate == "none"
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and setting() != "0"
        and not torch.compiler.is_compiling()
    ):
        compiled = ops()
        if compiled is not None:
            return compiled.gelu(x, approximate, overwrite_input)
    return F.gelu(x, approximate=approximate)


def ops() -> ModuleType | None:
    """The compiled step, built on first call in this process (None where it cannot be)."""
    with _build_lock:
        if "ops" not in _built:
            _built["ops"] = build(SOURCE, "gmp_native_step")
        return _built["ops"]


def build(source: Path, name: str) -> ModuleType | None:
    """The extension `name` compiled from `source` (or loaded from torch's build cache); None,
    with a warning, where it cannot be built.

    The source goes in as text, so that torch's build directory holds its own copy: the build
    is reused by every checkout or install with the same source, wherever it lies.
    """
    from torch.utils.cpp_extension import load_inline

    try:
        return load_inline(name=name, cpp_sources=[source.read_text()], extra_cflags=["-O2"])
    except Exception as error:  # no compiler, no ninja, a failed build: the Python step works
        warnings.warn(
            f"gmp could not build its compiled training step ({_reason(error)}); it runs the "
            "Python step, with the same results (slower with several threads). Set "
            "GMP_NATIVE=0 to skip the attempt.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


def _reason(error: Exception) -> str:
    """The line of a failed build that says why: its last, less the build tool's sign-off."""
    lines = [line.strip() for line in str(error).strip().splitlines()]
    said = [line for line in lines if line and not line.startswith("ninja: build stopped")]
    return said[-1] if said else type(error).__name__


@contextmanager
def using(module: ModuleType | None) -> Iterator[None]:
    """Within the block, `active()` in this thread is `module` (None: the Python step)."""
    previous = getattr(_active, "ops", None)
    _active.ops = module
    try:
        yield
    finally:
        _active.ops = previous


def active() -> ModuleType | None:
    """The compiled step if this thread's current rollout uses it, else None."""
    return getattr(_active, "ops", None)
