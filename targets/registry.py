"""Name -> target constructor registry: `make("funnel", dim=10)`, `names()`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from targets.base import Target, TargetError


@dataclass(frozen=True)
class TargetInfo:
    """Static facts about a registered target, known without building it (no data loaded)."""

    name: str
    dim: str
    summary: str
    log_Z: bool
    samples: bool
    modes: bool


_REGISTRY: dict[str, tuple[Callable[..., Target], TargetInfo]] = {}


def register(
    name: str,
    *,
    dim: str,
    summary: str,
    log_Z: bool = False,
    samples: bool = False,
    modes: bool = False,
) -> Callable[[Callable[..., Target]], Callable[..., Target]]:
    """Class decorator adding a target constructor to the registry under `name`."""

    def add(factory: Callable[..., Target]) -> Callable[..., Target]:
        _REGISTRY[name] = (factory, TargetInfo(name, dim, summary, log_Z, samples, modes))
        return factory

    return add


def names() -> list[str]:
    """Sorted names of every registered target."""
    _load_all()
    return sorted(_REGISTRY)


def info(name: str) -> TargetInfo:
    """Static facts about target `name`."""
    return _lookup(name)[1]


def parameters(name: str) -> dict[str, object]:
    """Keyword arguments target `name` accepts, with their defaults."""
    factory = _lookup(name)[0]
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(factory).parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def make(name: str, **kwargs: object) -> Target:
    """Build target `name` with `kwargs`; a clear `TargetError` for unknown names or arguments."""
    factory = _lookup(name)[0]
    accepted = parameters(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TargetError(
            f"target {name!r} has no argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no arguments'}"
        )
    try:
        target = factory(**kwargs)
    except TargetError:
        raise
    except (TypeError, ValueError) as err:
        raise TargetError(f"target {name!r}: {err}") from err
    target.make_args = {"name": name, "kwargs": dict(kwargs)}
    return target


def _lookup(name: str) -> tuple[Callable[..., Target], TargetInfo]:
    _load_all()
    if name not in _REGISTRY:
        raise TargetError(f"unknown target {name!r}; known targets: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _load_all() -> None:
    """Import every target module so that each registers itself."""
    import targets.library  # noqa: F401
