"""Name -> target constructor registry: `make("funnel", dim=10)`, `names()`.

Besides the package's own targets, `make` builds targets from outside it (targets.plugins): a
`module:function` or `module:Class` reference, or a name that an installed distribution declares
in the `gmp.targets` entry point group. Registered names win over entry points of the same name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace

from targets import plugins
from targets.base import Target, TargetArgumentError, TargetError


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
_LOG_Z_RULES: dict[str, Callable[..., bool]] = {}  # log Z known for some arguments only


def register(
    name: str,
    *,
    dim: str,
    summary: str,
    log_Z: bool | Callable[..., bool] = False,
    samples: bool = False,
    modes: bool = False,
) -> Callable[[Callable[..., Target]], Callable[..., Target]]:
    """Class decorator adding a target constructor to the registry under `name`. `log_Z` is
    whether the target's log normaliser is known, or a function of the constructor's keyword
    arguments saying whether it is known with them."""

    def add(factory: Callable[..., Target]) -> Callable[..., Target]:
        known = log_Z() if callable(log_Z) else log_Z
        _REGISTRY[name] = (factory, TargetInfo(name, dim, summary, known, samples, modes))
        if callable(log_Z):
            _LOG_Z_RULES[name] = log_Z
        return factory

    return add


def names() -> list[str]:
    """Sorted names of every registered target and of every installed entry point target."""
    _load_all()
    return sorted(set(_REGISTRY) | set(plugins.entry_points()))


def info(name: str, kwargs: dict[str, object] | None = None) -> TargetInfo:
    """Facts about target `name` with `kwargs`: static for the package's targets (no data
    loaded); a target from outside the package is built with `kwargs` and its facts read from it."""
    factory, facts = _lookup(name)
    if facts is not None:
        rule = _LOG_Z_RULES.get(name)
        return facts if rule is None else replace(facts, log_Z=rule(**(kwargs or {})))
    target = make(name, **(kwargs or {}))
    return TargetInfo(
        name=name,
        dim=str(target.dim),
        summary=plugins.summary(factory),
        log_Z=target.log_Z is not None,
        samples=target.has_samples,
        modes=target.n_modes is not None and target.n_modes > 1,
    )


def parameters(name: str) -> dict[str, object]:
    """Keyword arguments target `name` accepts, with their defaults (None: required)."""
    return _parameters(_lookup(name)[0])


def _parameters(factory: Callable[..., object]) -> dict[str, object]:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # no introspectable signature: no arguments known
        return {}
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in signature.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def check_arguments(name: str, kwargs: dict[str, object]) -> None:
    """`TargetError` when there is no target `name`, `TargetArgumentError` when it does not take
    every one of `kwargs` (their values are checked when it is built)."""
    _check_arguments(name, _lookup(name)[0], kwargs)


def _check_arguments(name: str, factory: Callable[..., object], kwargs: dict[str, object]) -> None:
    accepted = _parameters(factory)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown and not _takes_any_keyword(factory):
        raise TargetArgumentError(
            f"target {name!r} has no argument(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'no arguments'}"
        )


def _takes_any_keyword(factory: Callable[..., object]) -> bool:
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())


def make(name: str, **kwargs: object) -> Target:
    """Build target `name` with `kwargs`; a clear `TargetError` for unknown names or arguments,
    and for an outside target that fails to build or is no valid `Target`."""
    factory, facts = _lookup(name)
    _check_arguments(name, factory, kwargs)
    outside = facts is None
    try:
        target = factory(**kwargs)
    except TargetError:
        raise
    except (TypeError, ValueError) as err:
        raise TargetArgumentError(f"target {name!r}: {err}") from err
    except Exception as err:
        if not outside:
            raise
        raise TargetError(f"target {name!r} failed to build: {type(err).__name__}: {err}") from err
    if outside:
        target = plugins.checked(name, target, kwargs)
    target.make_args = {"name": name, "kwargs": dict(kwargs)}
    return target


def _lookup(name: str) -> tuple[Callable[..., Target], TargetInfo | None]:
    """The factory of `name` and its static facts (None for a target from outside)."""
    _load_all()
    if name in _REGISTRY:
        return _REGISTRY[name]
    factory = plugins.load_factory(name)
    if factory is None:
        raise TargetError(
            f"unknown target {name!r}; known targets: {', '.join(names())}; or a "
            "'module:function' reference to your own"
        )
    return factory, None


def _load_all() -> None:
    """Import every target module so that each registers itself."""
    import targets.builtin  # noqa: F401
