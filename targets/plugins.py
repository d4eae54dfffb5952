"""Targets from outside the package: `module:attr` references and `gmp.targets` entry points.

A study (or `targets.make`) names an outside target in one of two ways:
- a reference `package.module:function` (or `:Class`, or `:Class.factory`): the module is
  imported (it must be importable: installed, on PYTHONPATH, or beside the study file), and the
  attribute is called with the target's keyword arguments;
- a name that an installed distribution declares in the entry point group `gmp.targets`, e.g.
  `[project.entry-points."gmp.targets"] banana = "mypkg.targets:Banana"` in its pyproject.toml.

Whatever the factory returns must be a `targets.Target` whose `dim` is a positive integer (the
`dim` argument, where one is given) and whose `log_prob` maps a [B, dim] batch to [B]: `checked`
says what is wrong otherwise.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Any

import torch

from targets.base import Target, TargetError

ENTRY_POINT_GROUP = "gmp.targets"
"""Entry point group through which installed distributions add targets."""

_PROBE_BATCH = 2
"""Rows of the zero batch whose `log_prob` shape `checked` verifies."""


def is_reference(name: str) -> bool:
    """Whether `name` is a `module:attr` reference rather than a registered name."""
    return ":" in name


def entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed `gmp.targets` entry points by name (read afresh from the import path)."""
    return {point.name: point for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_factory(name: str) -> Callable[..., Any] | None:
    """The factory of outside target `name` (a reference or an entry point's name); None when
    `name` is neither; `TargetError` saying why when it cannot be loaded."""
    if is_reference(name):
        return _callable(name, _import_reference(name))
    point = entry_points().get(name)
    if point is None:
        return None
    try:
        loaded = point.load()
    except Exception as err:
        source = f"entry point {point.value!r} of {_distribution(point)}"
        raise TargetError(f"target {name!r}: cannot load {source}: {_reason(err)}") from err
    return _callable(name, loaded)


def checked(name: str, built: object, kwargs: dict[str, Any]) -> Target:
    """`built` (what outside target `name`'s factory returned for `kwargs`) as a `Target`;
    `TargetError` when it is none, its `dim` is no positive integer or differs from the `dim`
    argument, or its `log_prob` does not map a [B, dim] batch to [B]."""
    if not isinstance(built, Target):
        raise TargetError(
            f"target {name!r} returned {type(built).__name__}, not a targets.Target "
            "(subclass targets.Target and implement log_prob)"
        )
    dim = built.dim
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise TargetError(f"target {name!r}: dim must be a positive integer, got {dim!r}")
    if "dim" in kwargs and kwargs["dim"] != dim:
        raise TargetError(f"target {name!r}: built with dim={kwargs['dim']!r} but has dim {dim}")
    probe = torch.zeros(_PROBE_BATCH, dim, dtype=torch.float64)
    try:
        with torch.no_grad():
            log_prob = built.log_prob(probe)
    except Exception as err:
        raise TargetError(
            f"target {name!r}: log_prob fails on a [{_PROBE_BATCH}, {dim}] batch (is dim "
            f"right?): {_reason(err)}"
        ) from err
    shape = tuple(getattr(log_prob, "shape", ()))
    if shape != (_PROBE_BATCH,):
        raise TargetError(
            f"target {name!r}: log_prob of a [{_PROBE_BATCH}, {dim}] batch must have shape "
            f"[{_PROBE_BATCH}], got {list(shape)} (is dim right?)"
        )
    return built


def summary(factory: Callable[..., Any]) -> str:
    """The first line of the factory's docstring (or its name), for listings."""
    doc = (factory.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else getattr(factory, "__qualname__", repr(factory))


def _import_reference(name: str) -> Any:
    module_name, _, attribute = name.partition(":")
    if not module_name or not attribute:
        raise TargetError(
            f"target {name!r}: a reference is 'module:function' or 'module:Class', "
            "e.g. 'mytargets:Banana'"
        )
    importlib.invalidate_caches()  # modules written since the last import are found
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name is not None and (module_name + ".").startswith(err.name + "."):
            raise TargetError(
                f"target {name!r}: no module named {err.name!r}; put it beside the study file, "
                "on PYTHONPATH or install it (Ray workers must import it too)"
            ) from None
        raise TargetError(f"target {name!r}: importing {module_name!r} failed: {err}") from err
    except Exception as err:
        raise TargetError(
            f"target {name!r}: importing {module_name!r} failed: {_reason(err)}"
        ) from err
    found: Any = module
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise TargetError(
                f"target {name!r}: module {module_name!r} has no attribute {attribute!r}"
            )
        found = getattr(found, part)
    return found


def _callable(name: str, factory: Any) -> Callable[..., Any]:
    if not callable(factory):
        raise TargetError(
            f"target {name!r} is a {type(factory).__name__}, not a function or class that "
            "returns a targets.Target"
        )
    return factory


def _distribution(point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f"distribution {dist.name!r}" if dist is not None else "an installed distribution"


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"
